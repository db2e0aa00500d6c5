package vpn

import (
	"log/slog"
	"net"
	"testing"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/conn"
)

// BenchmarkBindReceive measures the receive path per datagram (one op is
// one datagram) on real loopback UDP sockets: wireguard-go's StdNetBind as
// is, tariq's bind with the single default port (STUN check only), with
// three stock ports (endpoints wrapped, through the cache), and on the
// obfuscated port (AmneziaWG transport data: the header restored in place).
// Datagrams are sent in batches of 64 with sendmmsg while the timer is
// stopped, so only receiving is counted, allocations included.
//
//	go test ./vpn -run '^$' -bench BindReceive -benchmem
func BenchmarkBindReceive(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	p := goldenAWG()
	payload := make([]byte, 1280)
	putLE32(payload, 4)
	awgPayload := make([]byte, 1280)
	putLE32(awgPayload, p.H4)
	for _, bc := range []struct {
		name    string
		bind    func() conn.Bind
		payload []byte
	}{
		{"stdnetbind", conn.NewStdNetBind, payload},
		{"tariq-one-port", func() conn.Bind {
			return newBind([]*socket{{key: "vpn.listen_port", inner: conn.NewStdNetBind()}}, log)
		}, payload},
		{"tariq-three-ports", func() conn.Bind {
			return newBind([]*socket{
				{key: "vpn.listen_port", inner: conn.NewStdNetBind()},
				{key: "vpn.extra_ports", inner: conn.NewStdNetBind()},
				{key: "vpn.extra_ports", inner: conn.NewStdNetBind()},
			}, log)
		}, payload},
		{"tariq-obfuscated", func() conn.Bind {
			a := newAWG(p, wgconf.NewPrivateKey().PublicKey(), nil)
			return newBind([]*socket{
				{key: "vpn.obfuscation.listen_port", awg: a, inner: conn.NewStdNetBind()},
				{key: "vpn.listen_port", inner: conn.NewStdNetBind()},
			}, log)
		}, awgPayload},
	} {
		b.Run(bc.name, func(b *testing.B) { benchReceive(b, bc.bind(), bc.payload) })
	}
}

func benchReceive(b *testing.B, bind conn.Bind, payload []byte) {
	fns, port, err := bind.Open(0) // fns[0]: the first socket's IPv4 receiver
	if err != nil {
		b.Fatal(err)
	}
	defer bind.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: dst}
	}
	bs := bind.BatchSize()
	bufs, sizes, eps := make([][]byte, bs), make([]int, bs), make([]conn.Endpoint, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16-1) // wireguard-go's MaxSegmentSize buffers: GRO may coalesce
	}
	b.ReportAllocs()
	b.ResetTimer()
	for got := 0; got < b.N; {
		b.StopTimer()
		want := min(len(msgs), b.N-got)
		sent, err := pc.WriteBatch(msgs[:want], 0)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for r := 0; r < sent; {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				if sizes[i] > 0 {
					if sizes[i] != len(payload) || le32(bufs[i]) != 4 {
						b.Fatalf("received %d bytes, type %d", sizes[i], le32(bufs[i]))
					}
					r++
				}
			}
		}
		got += sent
	}
}

// BenchmarkAWGTransport is the obfuscated socket's work per transport
// datagram, both ways, without the sockets: it allocates nothing.
func BenchmarkAWGTransport(b *testing.B) {
	a := newAWG(goldenAWG(), wgconf.NewPrivateKey().PublicKey(), nil)
	m := make([]byte, 1452)
	putLE32(m, 4)
	batch := [][]byte{m}
	var src conn.Endpoint = hubEndpoint(40000)
	b.ReportAllocs()
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		a.encodeTransport(batch)
		a.decode(m, src)
	}
}
