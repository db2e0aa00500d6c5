// Command pathbench measures one path for scripts/bench-vpn.sh the same
// way whatever the path is: TCP throughput each way and a voice-like UDP
// stream's loss and round trips, either directly (through whatever the
// device's routing sends it into: no tunnel, or a WireGuard tunnel) or
// through an Outline key, with the Outline app's own code path
// (outline-sdk's WebSocket endpoints under Shadowsocks dialers, built from
// the config document the key points at: testutil.NewOutlineClient, the
// client the censor lab uses).
//
//	pathbench serve -addr IP [-sink 5101 -source 5102 -echo 5103]
//	    the internet host's side: a TCP sink (answers the byte count at
//	    EOF), a TCP source (sends for the seconds asked on a line), a UDP
//	    echo; until SIGINT/SIGTERM
//	pathbench cert -ip IP -dir DIR
//	    a test CA (ca.pem) and a certificate for IP signed by it
//	    (cert.pem, key.pem), for tariq's tls.mode files
//	pathbench tcp-up|tcp-down|voice -to HOST:PORT [-for 5s] [-key ssconf://… -ca ca.pem]
//	    one measurement, printed as one line of JSON; with -key, through
//	    that Outline key (its document fetched over HTTPS trusting -ca
//	    alone)
//
// voice is testutil.CallVoice: 160-byte packets, 50 a second, for -for.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/transport"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pathbench serve|cert|tcp-up|tcp-down|voice [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("pathbench "+os.Args[1], flag.ExitOnError)
	var err error
	switch cmd := os.Args[1]; cmd {
	case "serve":
		addr := fs.String("addr", "", "address to listen on")
		sink := fs.Int("sink", 5101, "TCP sink port")
		source := fs.Int("source", 5102, "TCP source port")
		echo := fs.Int("echo", 5103, "UDP echo port")
		fs.Parse(os.Args[2:])
		err = serve(*addr, *sink, *source, *echo)
	case "cert":
		ip := fs.String("ip", "", "the certificate's IP address")
		dir := fs.String("dir", "", "where to write ca.pem, cert.pem and key.pem")
		fs.Parse(os.Args[2:])
		err = writeCert(*ip, *dir)
	case "tcp-up", "tcp-down", "voice":
		to := fs.String("to", "", "target host:port")
		d := fs.Duration("for", 5*time.Second, "how long to send")
		key := fs.String("key", "", "an Outline key (ssconf://…): measure through it")
		ca := fs.String("ca", "", "PEM roots to trust for the key's server")
		fs.Parse(os.Args[2:])
		var out map[string]any
		out, err = measure(cmd, *to, *d, *key, *ca)
		if err == nil {
			json.NewEncoder(os.Stdout).Encode(out)
		}
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pathbench:", err)
		os.Exit(1)
	}
}

// dialers are how a measurement reaches its target.
type dialers struct {
	stream func(ctx context.Context, addr string) (transport.StreamConn, error)
	packet func(ctx context.Context) (net.PacketConn, error)
}

func newDialers(ctx context.Context, key, caFile string) (*dialers, error) {
	if key == "" {
		return &dialers{
			stream: func(ctx context.Context, addr string) (transport.StreamConn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return c.(*net.TCPConn), nil
			},
			packet: func(context.Context) (net.PacketConn, error) { return net.ListenPacket("udp", ":0") },
		}, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("-ca: no PEM certificate in %s", caFile)
	}
	f, err := testutil.FetchOutlineConfig(ctx, key, roots, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching the Outline config document: %w", err)
	}
	c, err := testutil.NewOutlineClient(f.Config, roots, nil)
	if err != nil {
		return nil, err
	}
	return &dialers{stream: c.Stream.DialStream, packet: c.Packet.ListenPacket}, nil
}

func measure(cmd, to string, d time.Duration, key, caFile string) (map[string]any, error) {
	if to == "" || d <= 0 || d > 10*time.Minute {
		return nil, errors.New("-to is required, and -for between 0 and 10m")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+60*time.Second)
	defer cancel()
	dl, err := newDialers(ctx, key, caFile)
	if err != nil {
		return nil, err
	}
	switch cmd {
	case "voice":
		pc, err := dl.packet(ctx)
		if err != nil {
			return nil, err
		}
		defer pc.Close()
		ua, err := net.ResolveUDPAddr("udp", to)
		if err != nil {
			return nil, err
		}
		r, err := testutil.Voice(pc, ua, testutil.CallVoice(d))
		if err != nil {
			return nil, err
		}
		msf := func(q float64) float64 { return float64(r.RTT(q)) / float64(time.Millisecond) }
		return map[string]any{"sent": r.Sent, "got": r.Got, "loss": r.LossPercent(),
			"p50_ms": msf(0.5), "p95_ms": msf(0.95), "p99_ms": msf(0.99), "max_ms": msf(1)}, nil
	case "tcp-up":
		c, err := dl.stream(ctx, to)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d + 30*time.Second))
		start := time.Now()
		buf := make([]byte, 64<<10)
		rand.Read(buf)
		for time.Since(start) < d {
			if _, err := c.Write(buf); err != nil {
				return nil, fmt.Errorf("sending: %w", err)
			}
		}
		if err := c.CloseWrite(); err != nil {
			return nil, err
		}
		ans, err := io.ReadAll(io.LimitReader(c, 64))
		secs := time.Since(start).Seconds()
		n, perr := strconv.ParseInt(strings.TrimSpace(string(ans)), 10, 64)
		if err != nil || perr != nil {
			return nil, fmt.Errorf("the sink answered %q (%v)", ans, errors.Join(err, perr))
		}
		return map[string]any{"bytes": n, "seconds": secs, "mbps": float64(n) * 8 / secs / 1e6}, nil
	default: // tcp-down
		c, err := dl.stream(ctx, to)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d + 30*time.Second))
		start := time.Now()
		if _, err := fmt.Fprintf(c, "%d\n", d.Milliseconds()); err != nil {
			return nil, err
		}
		n, err := io.Copy(io.Discard, c)
		secs := time.Since(start).Seconds()
		if err != nil {
			return nil, fmt.Errorf("receiving after %d bytes: %w", n, err)
		}
		return map[string]any{"bytes": n, "seconds": secs, "mbps": float64(n) * 8 / secs / 1e6}, nil
	}
}

// serve runs the internet host's side until SIGINT or SIGTERM.
func serve(addr string, sinkPort, sourcePort, echoPort int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	at := func(p int) string { return net.JoinHostPort(addr, strconv.Itoa(p)) }
	sink, err := net.Listen("tcp", at(sinkPort))
	if err != nil {
		return err
	}
	defer sink.Close()
	source, err := net.Listen("tcp", at(sourcePort))
	if err != nil {
		return err
	}
	defer source.Close()
	echo, err := net.ListenPacket("udp", at(echoPort))
	if err != nil {
		return err
	}
	defer echo.Close()
	go testutil.UDPEcho(echo)
	accept := func(ln net.Listener, handle func(net.Conn)) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(15 * time.Minute))
				handle(c)
			}()
		}
	}
	go accept(sink, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d\n", n)
	})
	go accept(source, func(c net.Conn) {
		var ms int64
		if _, err := fmt.Fscanf(io.LimitReader(c, 32), "%d\n", &ms); err != nil || ms <= 0 || ms > 600000 {
			return
		}
		buf := make([]byte, 64<<10)
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	fmt.Printf("serving sink %s, source %s, echo %s\n", sink.Addr(), source.Addr(), echo.LocalAddr())
	<-ctx.Done()
	return nil
}

// writeCert writes a CA and a certificate for ip signed by it: what a
// public CA would give, for tls.mode files (a self-signed certificate is
// one the Outline app refuses, and tariq with it).
func writeCert(ip, dir string) error {
	a := net.ParseIP(ip)
	if a == nil || dir == "" {
		return errors.New("-ip (an IP address) and -dir are required")
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pathbench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour), IPAddresses: []net.IP{a},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for name, blk := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(blk), 0o600); err != nil {
			return err
		}
	}
	return nil
}
