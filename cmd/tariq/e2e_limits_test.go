package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// Limits per member, end to end: the real daemon, members' devices running
// upstream wireguard-go in the lab, and the limits set with the CLI.
//
//	brief    --expires 20s     works, is cut when it expires, gets no
//	                           handshake after 30 s; --expires none brings
//	                           the same config back
//	capped   --rate 8mbit      6-9 Mbit/s each way in iperf3 while free,
//	free     (none)            uncapped, gets much more at the same time
//	metered  --data-limit 20MiB  16 MiB down, then cut before 24 MiB;
//	                           --data-limit none brings it back
//
// then a restart (SIGTERM) carries the month's usage over, and a kill -9
// while a member's download is counted loses at most one flush interval
// of it and nothing of the state. The daemon counts every 250 ms and
// stores every 2 s (serve's hidden --test-usage-tick/--test-usage-flush;
// the defaults are 1 s and 1 min).

const (
	limitsTick  = 250 * time.Millisecond
	limitsFlush = 2 * time.Second
)

// TestMemberLimits runs the limits on one lab, one subtest per limit.
func TestMemberLimits(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "iperf3")
	l := newLab(t, labOptions{
		Config: map[string]string{
			"tls.mode":    "self-signed",
			"web.enabled": "true",
			"web.listen":  fmt.Sprintf("[%q]", inviteWebAddr),
		},
		ServeArgs: []string{"--test-usage-tick", limitsTick.String(), "--test-usage-flush", limitsFlush.String()},
	})
	// brief's 20 s start now.
	brief := l.addDevice("brief", "--expires", "20s")
	added := time.Now()
	capped := l.addDevice("capped", "--rate", "8mbit")
	free := l.addDevice("free")
	metered := l.addDevice("metered", "--data-limit", "20MiB")
	for _, d := range []*device{brief, capped, free, metered} {
		d.up()
	}
	brief.mustReach("before it expires")
	for _, d := range []*device{capped, free, metered} {
		d.mustReach("first connection")
	}
	if time.Since(added) > 15*time.Second {
		t.Fatalf("the lab took %s to come up: brief's 20 s are nearly over", time.Since(added).Round(time.Second))
	}

	t.Run("rate", func(t *testing.T) {
		defer l.reportTo(t)()
		l.iperfServer(5201)
		l.iperfServer(5202)
		for _, dir := range []struct {
			name string
			args []string
		}{{"down", []string{"-R"}}, {"up", nil}} {
			var wg sync.WaitGroup
			var capRate, freeRate float64
			var capErr, freeErr error
			wg.Go(func() { capRate, capErr = capped.iperf(5201, dir.args...) })
			wg.Go(func() { freeRate, freeErr = free.iperf(5202, dir.args...) })
			wg.Wait()
			if capErr != nil || freeErr != nil {
				t.Fatalf("%s: iperf3: capped %v; free %v", dir.name, capErr, freeErr)
			}
			t.Logf("%s, at the same time: capped (8mbit) %.2f Mbit/s, free %.1f Mbit/s", dir.name, capRate/1e6, freeRate/1e6)
			if capRate < 6e6 || capRate > 9e6 {
				t.Errorf("%s: the member capped at 8mbit got %.2f Mbit/s, want 6-9", dir.name, capRate/1e6)
			}
			if freeRate < 4*capRate {
				t.Errorf("%s: the uncapped member got %.1f Mbit/s beside the capped one's %.2f: want much more (4x)", dir.name, freeRate/1e6, capRate/1e6)
			}
		}
	})

	t.Run("expiry-cut", func(t *testing.T) {
		defer l.reportTo(t)()
		// Cut within a few seconds of the expiry (at most 20 s after the
		// add: the CLI rounds it down to the second), open tunnel and all;
		// everyone else untouched.
		expires := added.Add(20 * time.Second)
		time.Sleep(time.Until(expires))
		for {
			tried := time.Now()
			body, err := brief.ns.TryRun("curl", "-sS", "--max-time", "2", "http://10.10.2.2/")
			if err != nil {
				t.Logf("brief cut off: a request %s after it was added failed", tried.Sub(added).Round(100*time.Millisecond))
				break
			}
			if tried.After(expires.Add(5 * time.Second)) {
				t.Fatalf("brief, added with --expires 20s, still gets through %s later: %q", tried.Sub(added).Round(time.Second), body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		free.mustReach("while brief is cut off")
		l.checkBlocked("brief", "expired", "blocked_expired_body")
	})

	t.Run("data-limit", func(t *testing.T) {
		defer l.reportTo(t)()
		const first, second = 16 << 20, 16 << 20
		got, err := metered.download(first, 5*time.Second, 30*time.Second)
		if err != nil || got != first {
			t.Fatalf("the first 16 MiB of a 20 MiB limit: %d bytes, %v", got, err)
		}
		got, err = metered.download(second, 3*time.Second, 30*time.Second)
		total := first + got
		t.Logf("the next 16 MiB: %d bytes (%.1f MiB in all), then %v", got, float64(total)/(1<<20), err)
		if got == second || total >= 24<<20 {
			t.Fatalf("metered, limited to 20MiB, received %d bytes in all, want the transfer cut before 24 MiB", total)
		}
		free.mustReach("while metered is cut off")
		fams := l.metrics()
		in, _ := metricValue(fams, "tariq_member_month_bytes", map[string]string{"member": "metered", "direction": "in"})
		out, _ := metricValue(fams, "tariq_member_month_bytes", map[string]string{"member": "metered", "direction": "out"})
		if used := uint64(in + out); used > 20<<20 || used < first {
			t.Errorf("metered's usage this month: %d bytes (in %.0f, out %.0f), want 16-20 MiB: never past the limit", used, in, out)
		}
		l.checkBlocked("metered", "over-limit", "blocked_over_limit_body")
		if testing.Verbose() {
			t.Logf("tariq status with metered cut off:\n%s", l.cli("status"))
		}

		// Lifted: the same client, with the same config, passes traffic
		// again.
		set := time.Now()
		l.cli("peer", "set", "metered", "--data-limit", "none")
		metered.waitReach("after --data-limit none", set, 20*time.Second)
		if got, err := metered.download(8<<20, 5*time.Second, 30*time.Second); err != nil || got != 8<<20 {
			t.Errorf("after --data-limit none: %d of 8 MiB, %v", got, err)
		}
		l.checkNotBlocked("metered")
	})

	t.Run("expiry-no-handshake", func(t *testing.T) {
		defer l.reportTo(t)()
		// 30 s on, a client started afresh with the same config (which
		// handshakes at once, and again 5 s later) gets no handshake: the
		// server refuses it.
		time.Sleep(time.Until(added.Add(30 * time.Second)))
		brief.down()
		brief.up()
		tried := time.Now()
		for time.Since(tried) < 7*time.Second {
			brief.ns.TryRun("busybox", "ping", "-c", "1", "-W", "1", "10.77.0.1")
		}
		brief.mustNotReach("expired, with a fresh client")
		if hs := brief.handshake(); !hs.IsZero() {
			t.Errorf("expired, brief's fresh client handshook at %s", hs.Format(time.TimeOnly))
		}
		if out := brief.ns.Run("wg", "show", brief.ifname(), "latest-handshakes"); !strings.HasSuffix(strings.TrimSpace(out), "\t0") {
			t.Errorf("wg show latest-handshakes on brief's device: %q, want none", out)
		}
		set := time.Now()
		l.cli("peer", "set", "brief", "--expires", "none")
		brief.waitReach("after --expires none", set, 20*time.Second)
		brief.mustReach("after --expires none")
		l.checkNotBlocked("brief")
	})

	t.Run("restart", func(t *testing.T) {
		defer l.reportTo(t)()
		// SIGTERM stores what was counted: the month's usage is carried
		// over to the next run, to the byte. (No traffic now: wait for the
		// count to take in the last of it.)
		time.Sleep(3 * limitsTick)
		before, list := l.memberUsage(), membersTable(l.cli("peer", "list"))
		l.stopDaemon()
		l.startDaemon()
		after, listAfter := l.memberUsage(), membersTable(l.cli("peer", "list"))
		for _, name := range []string{"brief", "capped", "free", "metered"} {
			if before[name] == 0 || after[name] != before[name] {
				t.Errorf("%s's usage this month: %d bytes before the restart, %d after", name, before[name], after[name])
			}
		}
		if list != listAfter {
			t.Errorf("peer list's members before the restart:\n%s\nafter:\n%s", list, listAfter)
		}
		if status := l.cli("status"); membersTable(status) != listAfter {
			t.Errorf("tariq status shows other members than peer list:\n%s\npeer list:\n%s", status, listAfter)
		}
	})

	t.Run("kill-9", func(t *testing.T) {
		defer l.reportTo(t)()
		// A download by the capped member (about 1 MB/s), counted while it
		// runs; kill -9 after 6 s, that is three stores in. (A fresh
		// client: the one from before the restart would wait 15 s before
		// it found its session gone.)
		capped.down()
		capped.up()
		capped.waitReach("after the restart", time.Now(), 20*time.Second)
		start := l.memberUsage()["capped"]
		done := make(chan int64, 1)
		go func() {
			n, _ := capped.download(64<<20, 2*time.Second, 30*time.Second)
			done <- n
		}()
		time.Sleep(6 * time.Second)
		atKill := l.memberUsage()["capped"]
		l.killDaemon()
		got := <-done
		l.startDaemon()
		after := l.memberUsage()["capped"]
		t.Logf("capped: %d bytes counted before the download, %d when killed (%d downloaded), %d stored", start, atKill, got, after)

		// At most one flush interval of counting lost: at the cap, each
		// direction passes at most 1 MB/s (plus a burst).
		maxLost := uint64((limitsFlush + limitsTick).Seconds() * 1e6 * 1.25)
		if atKill < start+4e6 {
			t.Fatalf("capped's download counted only %d bytes in 6 s", atKill-start)
		}
		if after+maxLost < atKill || after > atKill+maxLost {
			t.Errorf("capped's usage: %d bytes counted when killed, %d stored: want at most one flush interval (%s, %d bytes) lost", atKill, after, limitsFlush, maxLost)
		}
		// Nothing torn: the state is whole JSON, every member is there with
		// their limits.
		b, err := os.ReadFile(filepath.Join(l.dir, "data", "state.json"))
		if err != nil || !json.Valid(b) {
			t.Fatalf("state.json after kill -9: %v", err)
		}
		list := membersTable(l.cli("peer", "list"))
		for _, want := range []string{"capped", "8mbit", "brief", "free", "metered"} {
			if !strings.Contains(list, want) {
				t.Errorf("peer list after kill -9 lacks %q:\n%s", want, list)
			}
		}
	})
}

// iperf runs iperf3 against the internet host's server on port for 4 s
// (after 1 s left out: the connection's start) and returns what the
// receiver got, in bits per second.
func (d *device) iperf(port int, args ...string) (float64, error) {
	out, err := d.ns.TryRun(append([]string{"timeout", "30", "iperf3", "-c", "10.10.2.2", "-p", strconv.Itoa(port),
		"-t", "4", "-O", "1", "-J", "--connect-timeout", "5000"}, args...)...)
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.Error != "" || err != nil {
		return 0, fmt.Errorf("%s: %v %v %s", d.name, err, jerr, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

// waitReach waits, from since and for at most within, until the device
// gets an HTTP answer from the internet host, and logs how long it took.
func (d *device) waitReach(label string, since time.Time, within time.Duration) {
	t := d.l.t
	t.Helper()
	for {
		if _, err := d.fetch("http://10.10.2.2/"); err == nil {
			t.Logf("%s: %s gets through %s later", label, d.name, time.Since(since).Round(100*time.Millisecond))
			return
		}
		if time.Since(since) > within {
			t.Fatalf("%s: %s does not get through within %s", label, d.name, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// memberUsage returns each member's usage this month, both directions, as
// the metrics say.
func (l *lab) memberUsage() map[string]uint64 {
	out := map[string]uint64{}
	fams := l.metrics()
	for _, m := range fams["tariq_member_month_bytes"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "member" {
				out[lp.GetValue()] += uint64(m.GetGauge().GetValue())
			}
		}
	}
	return out
}

// membersTable returns the members table of `peer list` or `status`
// output: from its header to the first blank line.
//
// The SEEN WORKING column is left out: it is what the daemon saw since it
// started (a handshake, an Outline connection), not what it keeps.
func membersTable(out string) string {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "MEMBER ") {
			end := i
			for end < len(lines) && strings.TrimSpace(lines[end]) != "" {
				end++
			}
			table := slices.Clone(lines[i:end])
			if cut := strings.Index(line, "SEEN WORKING"); cut > 0 {
				for j, l := range table {
					table[j] = strings.TrimRight(l[:min(cut, len(l))], " ")
				}
			}
			return strings.Join(table, "\n")
		}
	}
	return ""
}

// tableRow returns the row of table whose first column is name, its
// columns separated by single spaces.
func tableRow(table, name string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return strings.Join(f, " ")
		}
	}
	return ""
}

// checkBlocked checks that member shows as cut off for reason (expired,
// over-limit) everywhere: status and peer list (the member and their
// device), peer show, the metrics, and the invite page, which a fresh link
// opens on a message (the i18n key body) and no way to the settings.
func (l *lab) checkBlocked(member, reason, body string) {
	t := l.t
	t.Helper()
	for _, cmd := range [][]string{{"status"}, {"peer", "list"}} {
		out := l.cli(cmd...)
		if row := tableRow(membersTable(out), member); !strings.HasPrefix(row, member+" 1 "+reason+" ") {
			t.Errorf("tariq %s: member %s's row %q, want it %s:\n%s", strings.Join(cmd, " "), member, row, reason, out)
		}
		if dev := statusLine(out, member); !strings.Contains(dev, " "+reason+" ") {
			t.Errorf("tariq %s: device %s's line %q, want it %s:\n%s", strings.Join(cmd, " "), member, dev, reason, out)
		}
	}
	code, _, errOut := tariq(t, "peer", "show", member, "--config", l.conf)
	if code != 0 || !strings.Contains(errOut, "is cut off") {
		t.Errorf("peer show %s: exit %d, stderr %q: want it to say the member is cut off", member, code, errOut)
	}
	fams := l.metrics()
	for _, why := range []string{"expired", "over-limit"} {
		want := map[bool]float64{true: 1, false: 0}[why == reason]
		if v, ok := metricValue(fams, "tariq_member_blocked", map[string]string{"member": member, "reason": why}); !ok || v != want {
			t.Errorf("tariq_member_blocked{member=%q,reason=%q} = %v (present %v), want %v", member, why, v, ok, want)
		}
	}

	// The invite page of a fresh link: the message, in the member's
	// language, and nothing to reveal.
	link := strings.TrimSpace(l.cli("peer", "show", member, "--invite"))
	_, roots := l.selfSigned()
	c := nsClient(t, l.server, "127.0.0.1", inviteWebAddr, roots)
	resp, err := c.Get(link)
	if err != nil {
		t.Fatalf("GET %s: %v", link, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	en := inviteStrings(t, "en")
	msg := strings.ReplaceAll(en[body], "{name}", member)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, en["blocked_title"]) || !strings.Contains(page, htmlText(msg)) {
		t.Errorf("the invite page of a member cut off (%s): %d, want 403 with %q and %q:\n%s", reason, resp.StatusCode, en["blocked_title"], msg, page)
	}
	if strings.Contains(page, `id="reveal"`) || strings.Contains(page, "PrivateKey") || strings.Contains(page, "data:") {
		t.Errorf("the invite page of a member cut off offers the settings:\n%s", page)
	}
}

// htmlText is s as html/template writes it in text.
func htmlText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// checkNotBlocked checks member shows active in the members table and the
// metrics.
func (l *lab) checkNotBlocked(member string) {
	t := l.t
	t.Helper()
	out := l.cli("peer", "list")
	if row := tableRow(membersTable(out), member); !strings.HasPrefix(row, member+" 1 active ") {
		t.Errorf("peer list: member %s's row %q, want it active:\n%s", member, row, out)
	}
	fams := l.metrics()
	for _, why := range []string{"expired", "over-limit"} {
		if v, _ := metricValue(fams, "tariq_member_blocked", map[string]string{"member": member, "reason": why}); v != 0 {
			t.Errorf("tariq_member_blocked{member=%q,reason=%q} = %v, want 0", member, why, v)
		}
	}
}
