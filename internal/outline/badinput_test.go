package outline

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

func upgradeHeaders() http.Header {
	key := make([]byte, 16)
	rand.Read(key)
	return http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {base64.StdEncoding.EncodeToString(key)},
	}
}

// fingerprint is everything an HTTP answer shows a prober but its date:
// status, protocol, headers and body.
func (h *harness) fingerprint(h2 bool, method, path string, hdr http.Header) string {
	h.t.Helper()
	req, err := http.NewRequest(method, "https://"+h.addr+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := h.httpClient(h2).Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var lines []string
	for k, v := range resp.Header {
		if k != "Date" {
			lines = append(lines, k+": "+strings.Join(v, ", "))
		}
	}
	slices.Sort(lines)
	return fmt.Sprintf("%s %s\n%s\n\n%s", resp.Proto, resp.Status, strings.Join(lines, "\n"), body)
}

// TestBadInputOnTheWebSocketPaths throws what a prober would at the two
// paths while bob uses his TCP stream and UDP association: requests that
// are not a WebSocket upgrade get exactly the normal page's answer; a
// wrong key, garbage frames and a replayed handshake get no data back
// (at most a WebSocket close); and every one of bob's round trips
// succeeds throughout.
func TestBadInputOnTheWebSocketPaths(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret(), "bob": NewSecret()})
	echo := testutil.TCPEcho(t, "127.0.0.1:0")
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	ctx := context.Background()

	bob := h.memberClient("bob")
	bTCP, err := bob.stream.DialStream(ctx, echo.String())
	if err != nil {
		t.Fatal(err)
	}
	defer bTCP.Close()
	bUDP, err := bob.packet.ListenPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bUDP.Close()
	var rounds, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var bobDone sync.WaitGroup
	bobDone.Add(1)
	go func() {
		defer bobDone.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			msg := fmt.Appendf(nil, "bob %d", i)
			err := testutil.EchoRound(bTCP, msg, 10*time.Second)
			if err == nil {
				err = testutil.UDPRound(bUDP, uecho, msg, 10*time.Second)
			}
			rounds.Add(1)
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err)
			}
		}
	}()

	t.Run("not an upgrade", func(t *testing.T) {
		hdr := func(mod func(http.Header)) http.Header {
			h := upgradeHeaders()
			if mod != nil {
				mod(h)
			}
			return h
		}
		for _, req := range []struct {
			name   string
			method string
			h2     bool
			hdr    http.Header
		}{
			{"plain GET", "GET", false, nil},
			{"plain GET over HTTP/2", "GET", true, nil},
			{"HEAD", "HEAD", false, nil},
			{"POST", "POST", false, nil},
			{"upgrade by POST", "POST", false, hdr(nil)},
			{"WebSocket version 8", "GET", false, hdr(func(h http.Header) { h.Set("Sec-Websocket-Version", "8") })},
			{"short key", "GET", false, hdr(func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") })},
			{"no Upgrade", "GET", false, hdr(func(h http.Header) { h.Del("Upgrade") })},
			{"foreign origin", "GET", false, hdr(func(h http.Header) { h.Set("Origin", "https://example.com") })},
		} {
			for _, path := range []string{"tcp", "udp"} {
				other := h.fingerprint(req.h2, req.method, "/"+NewPrefix()+"/"+path, req.hdr)
				got := h.fingerprint(req.h2, req.method, "/"+h.prefix+"/"+path, req.hdr)
				if got != other {
					t.Errorf("%s on /<prefix>/%s answered\n%s\nand an unknown path\n%s", req.name, path, got, other)
				}
				if strings.Contains(strings.ToLower(got), "websocket") {
					t.Errorf("%s on /<prefix>/%s mentions WebSocket:\n%s", req.name, path, got)
				}
			}
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		cfg, _, err := h.fetchConfig(h.accessKey("alice"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.secret = NewSecret()
		c := h.client(cfg)
		conn, err := c.stream.DialStream(ctx, echo.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testAuthTimeout + 5*time.Second))
		conn.Write([]byte("hello"))
		if n, err := conn.Read(make([]byte, 10)); n != 0 || err == nil || testutil.IsTimeout(err) {
			t.Errorf("TCP with a wrong key: read %d, %v; want nothing until the server gives up", n, err)
		}
		pc, err := c.packet.ListenPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pc.SetDeadline(time.Now().Add(10 * time.Second))
		pc.WriteTo([]byte("hello"), uecho)
		if n, _, err := pc.ReadFrom(make([]byte, 100)); n != 0 || err == nil || testutil.IsTimeout(err) {
			t.Errorf("UDP with a wrong key: read %d, %v; want nothing, then the end", n, err)
		}
	})

	t.Run("garbage frames", func(t *testing.T) {
		noise := make([]byte, 100)
		rand.Read(noise)
		var wg sync.WaitGroup
		for _, g := range []struct {
			name string
			send []byte
		}{
			{"text frame", wsFrame(0x1, []byte("hello there"), true)},
			{"random binary frame", wsFrame(0x2, noise, true)},
			{"short binary frame", wsFrame(0x2, noise[:10], true)},
			{"reserved opcode", wsFrame(0x3, noise[:20], true)},
			{"unmasked frame", wsFrame(0x2, noise, false)},
			{"ping", wsFrame(0x9, []byte("ping"), true)},
			{"not WebSocket at all", noise},
			{"a frame cut short", wsFrame(0x2, noise, true)[:40]},
		} {
			for _, path := range []string{"tcp", "udp"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, br := h.rawUpgrade(path)
					defer conn.Close()
					conn.Write(g.send)
					ops, err := readFrames(br, conn, time.Now().Add(testAuthTimeout+5*time.Second))
					if testutil.IsTimeout(err) {
						t.Errorf("%s on %s: the server held the connection past its auth timeout", g.name, path)
					}
					for _, op := range ops {
						// A pong answers a ping and a close ends the
						// connection: WebSocket itself, nothing of
						// Shadowsocks.
						if op != 0x8 && op != 0xA {
							t.Errorf("%s on %s: the server sent a frame of opcode %#x", g.name, path, op)
						}
					}
				}()
			}
		}
		wg.Wait()
	})

	t.Run("replayed handshake", func(t *testing.T) {
		alice := h.memberClient("alice")
		if err := tcpEcho(ctx, alice, echo.String()); err != nil {
			t.Fatal(err)
		}
		first := alice.sent.first()
		if len(first) < 50 {
			t.Fatalf("the recorded first message has %d bytes", len(first))
		}
		before := h.svc.AuthFailures()["tcp"]["replay"]
		conn := h.rawWS("tcp")
		conn.Write(first)
		conn.SetReadDeadline(time.Now().Add(testAuthTimeout + 5*time.Second))
		if n, err := conn.Read(make([]byte, 100)); n != 0 || err == nil || testutil.IsTimeout(err) {
			t.Errorf("replayed handshake: read %d, %v; want nothing until the server gives up", n, err)
		}
		if got := h.svc.AuthFailures()["tcp"]["replay"]; got != before+1 {
			t.Errorf("replays counted %d, want %d", got, before+1)
		}
	})

	close(stop)
	bobDone.Wait()
	t.Logf("bob: %d round trips during the bad input", rounds.Load())
	if n := failures.Load(); n > 0 {
		t.Errorf("bob's session was disturbed: %d of %d round trips failed, first: %v", n, rounds.Load(), firstFailure.Load())
	}
	if rounds.Load() < 10 {
		t.Errorf("bob made only %d round trips", rounds.Load())
	}
	if n := h.svc.AuthFailures()["tcp"]["unknown-key"]; n == 0 {
		t.Error("no TCP auth failure counted")
	}
	if n := h.svc.AuthFailures()["udp"]["unknown-key"]; n == 0 {
		t.Error("no UDP auth failure counted")
	}
}

// rawUpgrade opens a WebSocket on the path by hand, over TLS without ALPN
// as the Outline app's client does.
func (h *harness) rawUpgrade(path string) (net.Conn, *bufio.Reader) {
	h.t.Helper()
	conn, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.roots})
	if err != nil {
		h.t.Fatal(err)
	}
	req := "GET /" + h.prefix + "/" + path + " HTTP/1.1\r\nHost: " + h.addr + "\r\n"
	for k, v := range upgradeHeaders() {
		req += k + ": " + v[0] + "\r\n"
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		h.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		h.t.Fatalf("upgrade on %s: %s", path, resp.Status)
	}
	conn.SetDeadline(time.Time{})
	return conn, br
}

// wsFrame builds one final frame (RFC 6455 §5.2), masked as a client's
// must be, or not.
func wsFrame(opcode byte, payload []byte, masked bool) []byte {
	b := []byte{0x80 | opcode}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n < 1<<16:
		b = append(b, mbit|126, byte(n>>8), byte(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	mask := make([]byte, 4)
	rand.Read(mask)
	b = append(b, mask...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// readFrames reads the server's frames until the connection ends or the
// deadline, returning their opcodes and the error that stopped it.
func readFrames(br *bufio.Reader, conn net.Conn, deadline time.Time) ([]byte, error) {
	conn.SetReadDeadline(deadline)
	var ops []byte
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return ops, err
		}
		ops = append(ops, hdr[0]&0x0f)
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return ops, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return ops, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		if hdr[1]&0x80 != 0 {
			n += 4
		}
		if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
			return ops, err
		}
	}
}
