package testutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// A voice-like UDP stream and its echo, to measure what a call would get
// from a path: loss and round trips of small packets at a steady rate.
// The censor lab sends it through the Outline client, scripts/pathbench
// through every path of bench-vpn.sh.

// VoiceOptions shape the stream: Packets datagrams of Size bytes, one
// every Interval; Linger is how long the last may take to come back.
type VoiceOptions struct {
	Packets  int
	Size     int
	Interval time.Duration
	Linger   time.Duration
}

// CallVoice is a 20 ms codec's stream lasting d: 160-byte frames, 50 a
// second (G.711's 64 kbit/s), each given 2 seconds to come back.
func CallVoice(d time.Duration) VoiceOptions {
	return VoiceOptions{Packets: int(d / (20 * time.Millisecond)), Size: 160, Interval: 20 * time.Millisecond, Linger: 2 * time.Second}
}

// VoiceResult is what a stream measured.
type VoiceResult struct {
	Sent, Got int
	// RTTs are the round trips of the packets that came back, shortest
	// first.
	RTTs []time.Duration
}

// LossPercent is the share of the packets sent that did not come back.
func (r VoiceResult) LossPercent() float64 {
	if r.Sent == 0 {
		return 100
	}
	return 100 * float64(r.Sent-r.Got) / float64(r.Sent)
}

// RTT returns the q-quantile of the round trips (0.5: the median; nearest
// rank), or 0 if none came back.
func (r VoiceResult) RTT(q float64) time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(r.RTTs)))) - 1
	return r.RTTs[min(max(i, 0), len(r.RTTs)-1)]
}

func (r VoiceResult) String() string {
	return fmt.Sprintf("%d of %d back (%.1f %% lost), RTT p50 %s, p99 %s, max %s", r.Got, r.Sent, r.LossPercent(),
		ms(r.RTT(0.5)), ms(r.RTT(0.99)), ms(r.RTT(1)))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// voiceHeader is each packet's sequence number and send time (nanoseconds
// since the stream started), then padding to Size.
const voiceHeader = 12

// Voice sends the stream on pc to an echo at to (UDPEcho) and measures
// each packet's round trip. The packets go out on schedule (the i-th at
// i×Interval, whatever the path does meanwhile), and the whole takes at
// most Packets×Interval plus Linger. pc is the caller's to close.
func Voice(pc net.PacketConn, to net.Addr, o VoiceOptions) (VoiceResult, error) {
	if o.Packets <= 0 || o.Size < voiceHeader || o.Interval <= 0 {
		return VoiceResult{}, fmt.Errorf("voice: %d packets of %d bytes every %s: want some, of at least %d bytes", o.Packets, o.Size, o.Interval, voiceHeader)
	}
	start := time.Now()
	end := start.Add(time.Duration(o.Packets)*o.Interval + o.Linger)
	var (
		mu   sync.Mutex // guards sent, back and rtts
		sent int
		back = make([]bool, o.Packets)
		rtts []time.Duration
	)
	pc.SetReadDeadline(end)
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			now := time.Since(start)
			if err != nil {
				readDone <- err
				return
			}
			if n != o.Size {
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			at := time.Duration(binary.BigEndian.Uint64(buf[4:]))
			mu.Lock()
			if int(seq) < sent && !back[seq] {
				back[seq] = true
				rtts = append(rtts, now-at)
			}
			all := len(rtts) == o.Packets
			mu.Unlock()
			if all {
				readDone <- nil
				return
			}
		}
	}()
	pkt := make([]byte, o.Size)
	var sendErr error
	for i := range o.Packets {
		time.Sleep(time.Until(start.Add(time.Duration(i) * o.Interval)))
		binary.BigEndian.PutUint32(pkt, uint32(i))
		binary.BigEndian.PutUint64(pkt[4:], uint64(time.Since(start)))
		mu.Lock()
		sent = i + 1
		mu.Unlock()
		if _, err := pc.WriteTo(pkt, to); err != nil && sendErr == nil {
			sendErr = fmt.Errorf("voice: sending packet %d: %w", i, err)
		}
	}
	err := <-readDone
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = nil // the linger ran out: what did not come back is lost
	}
	mu.Lock()
	defer mu.Unlock()
	r := VoiceResult{Sent: sent, Got: len(rtts), RTTs: slices.Clone(rtts)}
	slices.Sort(r.RTTs)
	if err != nil {
		err = fmt.Errorf("voice: reading the echo: %w", err)
	}
	return r, errors.Join(sendErr, err)
}

// UDPEcho sends every datagram pc receives back to where it came from,
// until pc is closed.
func UDPEcho(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}
