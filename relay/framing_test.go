package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// chanFrame is a ChannelData frame as sent on a stream: padded to 4.
func chanFrame(ch uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, ch)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	b = append(b, data...)
	return append(b, make([]byte, -len(b)&3)...)
}

// TestStreamFramerDeliversAtOnce: every frame, the 4- and 8-byte
// ChannelData frames pion's framing holds back included, comes out as soon
// as its last byte is written, with nothing after it.
func TestStreamFramerDeliversAtOnce(t *testing.T) {
	frames := [][]byte{
		chanFrame(0x4000, nil),
		chanFrame(0x4001, []byte("a")),
		chanFrame(0x4002, []byte("ping")),
		chanFrame(0x7fff, []byte("five!")),
		stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw,
		chanFrame(0x4003, bytes.Repeat([]byte{7}, maxFrame-4)),
	}
	for _, chunk := range []int{0, 1, 3} { // 0: each frame in one write
		client, server := net.Pipe()
		f := newStreamFramer(server, maxFrame)
		go func() {
			for _, fr := range frames {
				step := chunk
				if step == 0 {
					step = len(fr)
				}
				for i := 0; i < len(fr); i += step {
					client.Write(fr[i:min(i+step, len(fr))])
				}
			}
		}()
		for i, want := range frames {
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := f.next(nil)
			if err != nil {
				t.Fatalf("chunk %d, frame %d (%d bytes): %v", chunk, i, len(want), err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("chunk %d, frame %d: got %x, want %x", chunk, i, got, want)
			}
		}
		client.Close()
		server.Close()
	}
}

func TestStreamFramerErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"neither stun nor channel data", append([]byte{0x80}, make([]byte, 40)...), errBadFrame},
		{"bad cookie", make([]byte, 20), errBadFrame},
		{"channel data too large", chanFrame(0x4000, make([]byte, maxFrame)), errFrameTooLarge},
		{"stun too large", append(binary.BigEndian.AppendUint32([]byte{0, 1, 0xff, 0xf0}, stunMagicCookie), make([]byte, 12)...), errFrameTooLarge},
		{"truncated", chanFrame(0x4000, []byte("abcdefgh"))[:7], io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			go func() { client.Write(tc.input); client.Close() }()
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			f := newStreamFramer(server, maxFrame)
			if _, err := f.next(nil); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// byteConn is a net.Conn over a fixed byte string, read in chunks of
// step bytes.
type byteConn struct {
	net.Conn
	data []byte
	step int
}

func (c *byteConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), c.step)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// FuzzStreamFramer: however a stream is cut into reads, the framer yields
// the same frames as framing it whole, and never a frame that frameSize
// would not cut.
func FuzzStreamFramer(f *testing.F) {
	f.Add(append(chanFrame(0x4000, []byte("ping")), stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw...), uint8(1))
	f.Add(chanFrame(0x4000, nil), uint8(3))
	f.Add([]byte{0x40, 0, 0xff, 0xff}, uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		whole := frames(&byteConn{data: data, step: len(data) + 1})
		cut := frames(&byteConn{data: data, step: int(step%64) + 1})
		if len(whole) != len(cut) {
			t.Fatalf("%d frames whole, %d cut", len(whole), len(cut))
		}
		for i := range whole {
			if !bytes.Equal(whole[i], cut[i]) {
				t.Fatalf("frame %d: %x whole, %x cut", i, whole[i], cut[i])
			}
			if n, err := frameSize(whole[i]); err != nil || n != len(whole[i]) {
				t.Fatalf("frame %d of %d bytes: frameSize %d, %v", i, len(whole[i]), n, err)
			}
		}
	})
}

func frames(c net.Conn) [][]byte {
	f := newStreamFramer(c, maxFrame)
	var out [][]byte
	for {
		fr, err := f.next(nil)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), fr...))
	}
}
