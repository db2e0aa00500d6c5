// Command turnhold opens TURN allocations and holds them open, for
// scripts/bench-relay.sh to measure a relay's memory with thousands of live
// allocations. turnutils_uclient cannot hold that many: it closes each
// client's probe socket but leaves the probe's allocation behind, so later
// clients that get the same local port meet 437 Allocation Mismatch and
// retry one second at a time.
//
// Each allocation has its own UDP socket on 127.0.0.1, sends one small
// packet to the echo peer right away (which creates the permission) and then
// one every -every, and stays open until -hold passes or SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v5"
)

func main() {
	server := flag.String("server", "", "TURN server host:port (UDP)")
	user := flag.String("user", "", "long-term username")
	pass := flag.String("pass", "", "long-term password")
	peer := flag.String("peer", "", "echo peer host:port")
	n := flag.Int("n", 1000, "allocations to open")
	parallel := flag.Int("parallel", 32, "allocations opened at once")
	size := flag.Int("size", 172, "payload bytes per packet")
	every := flag.Duration("every", 5*time.Second, "interval between packets on each allocation")
	hold := flag.Duration("hold", 60*time.Second, "how long to hold the allocations")
	setup := flag.Duration("setup", 120*time.Second, "deadline for opening all allocations")
	flag.Parse()
	if err := run(*server, *user, *pass, *peer, *n, *parallel, *size, *every, *hold, *setup); err != nil {
		fmt.Fprintln(os.Stderr, "turnhold:", err)
		os.Exit(1)
	}
}

type allocation struct {
	conn    net.PacketConn
	client  *turn.Client
	relayed net.PacketConn
}

func (a *allocation) close() {
	if a.relayed != nil {
		a.relayed.Close()
	}
	a.client.Close()
	a.conn.Close()
}

func run(server, user, pass, peerAddr string, n, parallel, size int, every, hold, setup time.Duration) error {
	if server == "" || peerAddr == "" {
		return errors.New("-server and -peer are required")
	}
	peer, err := net.ResolveUDPAddr("udp4", peerAddr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var echoes, sent atomic.Uint64
	payload := make([]byte, size)
	open := func(ctx context.Context) (*allocation, error) {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c, err := turn.NewClient(&turn.ClientConfig{
			STUNServerAddr: server, TURNServerAddr: server,
			Username: user, Password: pass, Conn: conn,
		})
		if err != nil {
			conn.Close()
			return nil, err
		}
		a := &allocation{conn: conn, client: c}
		if err := c.Listen(); err != nil {
			a.close()
			return nil, err
		}
		if a.relayed, err = c.AllocateWithContext(ctx); err != nil {
			a.close()
			return nil, err
		}
		if _, err := a.relayed.WriteTo(payload, peer); err != nil {
			a.close()
			return nil, err
		}
		sent.Add(1)
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := a.relayed.ReadFrom(buf); err != nil {
					return
				}
				echoes.Add(1)
			}
		}()
		return a, nil
	}

	start := time.Now()
	setupCtx, cancel := context.WithTimeout(ctx, setup)
	defer cancel()
	var (
		mu       sync.Mutex
		allocs   []*allocation
		failed   int
		firstErr error
		wg       sync.WaitGroup
		next     atomic.Int64
	)
	for range max(parallel, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && setupCtx.Err() == nil {
				a, err := open(setupCtx)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					allocs = append(allocs, a)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, a := range allocs {
			a.close()
		}
	}()
	// bench-relay.sh waits for this line.
	fmt.Printf("allocated %d of %d in %.1fs (failed %d", len(allocs), n, time.Since(start).Seconds(), failed)
	if firstErr != nil {
		fmt.Printf(", first error: %v", firstErr)
	}
	fmt.Println(")")

	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.After(hold)
	for {
		select {
		case <-ctx.Done():
			fmt.Printf("stopped: sent %d, echoes %d\n", sent.Load(), echoes.Load())
			return nil
		case <-end:
			fmt.Printf("held %s: sent %d, echoes %d\n", hold, sent.Load(), echoes.Load())
			return nil
		case <-tick.C:
			for _, a := range allocs {
				if _, err := a.relayed.WriteTo(payload, peer); err == nil {
					sent.Add(1)
				}
			}
		}
	}
}
