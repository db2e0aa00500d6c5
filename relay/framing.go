package relay

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
)

// streamFramer splits a TCP or TLS byte stream into TURN frames: STUN
// messages (RFC 8489 §6: a 20-byte header whose length field counts the
// attributes) and ChannelData messages (RFC 8656 §12.5: a 4-byte header,
// the data, and on a stream padding to a multiple of 4). It hands out each
// frame as soon as its last byte is in, reads into one fixed buffer and
// allocates nothing per frame.
//
// pion's framing (proto.STUNConn, consumeSingleTURNFrame) does not: it will
// not look at fewer than 9 buffered bytes, so a ChannelData frame of 4 or 8
// bytes (no data, or up to 4 bytes of it) waits in its buffer until the
// next frame arrives, which on a quiet stream may be never.
type streamFramer struct {
	conn net.Conn
	buf  []byte
	max  int // the largest frame accepted
	r, w int // buf[r:w] is read but not yet handed out
}

// errBadFrame means the stream holds something that is neither STUN nor
// ChannelData; the framing is lost and the connection must end.
var errBadFrame = errors.New("stream frame is neither STUN nor ChannelData")

// errFrameTooLarge means a frame announces more bytes than the framer may
// buffer.
var errFrameTooLarge = errors.New("stream frame too large")

// newStreamFramer frames c, accepting frames of up to max bytes; it reads
// up to twice that at once.
func newStreamFramer(c net.Conn, max int) *streamFramer {
	return &streamFramer{conn: c, buf: make([]byte, 2*max), max: max}
}

// frameSize returns the size of the frame at the start of b, or 0 if b is
// too short to tell.
func frameSize(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	switch b[0] & 0xC0 {
	case 0x40: // channel numbers 0x4000-0x7FFF
		if len(b) < 4 {
			return 0, nil
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		return 4 + (n+3)&^3, nil
	case 0x00:
		if len(b) < stunHeaderSize {
			return 0, nil
		}
		if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
			return 0, errBadFrame
		}
		return stunHeaderSize + int(binary.BigEndian.Uint16(b[2:4])), nil
	}
	return 0, errBadFrame
}

// buffered returns the next complete frame already buffered, if any.
func (f *streamFramer) buffered() ([]byte, error) {
	n, err := frameSize(f.buf[f.r:f.w])
	switch {
	case err != nil:
		return nil, err
	case n > f.max:
		return nil, errFrameTooLarge
	case n == 0 || n > f.w-f.r:
		return nil, nil
	}
	frame := f.buf[f.r : f.r+n]
	f.r += n
	if f.r == f.w {
		f.r, f.w = 0, 0
	}
	return frame, nil
}

// next returns the next frame, reading from the connection when none is
// buffered; before each read it calls arm (to set a read deadline), if
// arm is not nil. The frame is valid until the next call.
func (f *streamFramer) next(arm func() error) ([]byte, error) {
	for {
		frame, err := f.buffered()
		if frame != nil || err != nil {
			return frame, err
		}
		if f.w == len(f.buf) { // make room: move the partial frame to the front
			f.w = copy(f.buf, f.buf[f.r:f.w])
			f.r = 0
		}
		if arm != nil {
			if err := arm(); err != nil {
				return nil, err
			}
		}
		n, err := f.conn.Read(f.buf[f.w:])
		f.w += n
		if n > 0 {
			continue // a frame may be complete even if err is set
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, err
	}
}

// drain copies bytes read but not handed out as frames into b, for a
// stream that stops being framed (RFC 6062 §5.4: after ConnectionBind the
// connection carries a TCP peer's bytes), and returns how many.
func (f *streamFramer) drain(b []byte) int {
	n := copy(b, f.buf[f.r:f.w])
	f.r += n
	if f.r == f.w {
		f.r, f.w = 0, 0
	}
	return n
}
