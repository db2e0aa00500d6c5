package testutil

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// OfflineResolverRules is Chromium's --host-resolver-rules value that keeps
// the browser offline: every name fails to resolve except localhost, and
// IP literals are never looked up. Without it Chromium still resolves
// Google hosts at start-up.
const OfflineResolverRules = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"

// BrowserOptions configures NewBrowser. The zero value is a headless,
// offline Chromium with a 800×600 viewport and a two-minute lifetime.
type BrowserOptions struct {
	// Timeout bounds the browser's whole life, every Run included; zero
	// means two minutes.
	Timeout time.Duration
	// HostMap maps host names (optionally name:port) to addresses ahead of
	// the offline rules, e.g. {"tariq.test": "127.0.0.1"}.
	HostMap map[string]string
	// Flags are extra command-line switches without the leading dashes:
	// "ignore-certificate-errors-spki-list": pin, or "some-switch": true.
	Flags map[string]any
	// Viewport, if set, is emulated on the page before NewBrowser returns.
	Viewport *Viewport
}

// Viewport is an emulated screen: CSS pixels, device scale factor (zero
// means 1) and whether the page sees a mobile, touch-screen device.
type Viewport struct {
	Width, Height int64
	Scale         float64
	Mobile        bool
}

// PhoneViewport returns a phone-sized portrait viewport: a 390×844
// CSS-pixel touch screen at 3×.
func PhoneViewport() *Viewport {
	return &Viewport{Width: 390, Height: 844, Scale: 3, Mobile: true}
}

// Browser is one headless Chromium with one tab, driven over the DevTools
// protocol by chromedp. It is closed, and its whole process tree killed, when
// the test ends; on failure the test log gets the page's console output.
type Browser struct {
	t      testing.TB
	ctx    context.Context // the tab's context, bounded by BrowserOptions.Timeout
	pgid   int             // chromium's process group, 0 until it answers
	dir    string          // profile, config and cache, unique to this browser
	output *tailBuffer

	mu      sync.Mutex // guards console
	console []string
}

// NewBrowser starts Debian's chromium headless with the flags that keep it
// quiet and offline (at start Chromium reaches for its own services, which a
// closed network refuses, many at a time) plus opts. It skips the test when
// chromium is not installed, and fails it under CI=true.
func NewBrowser(t testing.TB, opts BrowserOptions) *Browser {
	t.Helper()
	exe := RequireBinary(t, "chromium")
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	rules := OfflineResolverRules
	if len(opts.HostMap) > 0 {
		var maps []string
		for name, addr := range opts.HostMap {
			maps = append(maps, "MAP "+name+" "+addr)
		}
		rules = strings.Join(maps, ", ") + ", " + rules
	}
	b := &Browser{t: t, output: &tailBuffer{}, dir: t.TempDir()}
	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("host-resolver-rules", rules),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.UserDataDir(filepath.Join(b.dir, "profile")),
		// Chromium starts two chrome_crashpad_handler processes in sessions
		// of their own, outside its process group, with their database
		// under $XDG_CONFIG_HOME; point that into b.dir, so nothing is
		// written to ~/.config and cleanup can find them by their command
		// line. (--disable-crashpad-for-testing would avoid them, but
		// crashes the network service of Chromium 156.)
		chromedp.Env("XDG_CONFIG_HOME="+filepath.Join(b.dir, "config"),
			"XDG_CACHE_HOME="+filepath.Join(b.dir, "cache")),
		chromedp.WindowSize(800, 600),
		chromedp.CombinedOutput(b.output),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Its own process group, so cleanup can kill every helper
			// process (zygote, renderer, network service) by the group's id;
			// and SIGKILL if the test binary dies first.
			cmd.SysProcAttr = browserProcAttr()
		}),
	}
	if os.Geteuid() == 0 {
		allocOpts = append(allocOpts, chromedp.NoSandbox)
	}
	for name, value := range opts.Flags {
		allocOpts = append(allocOpts, chromedp.Flag(name, value))
	}

	life, cancelLife := context.WithTimeout(context.Background(), opts.Timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(life, allocOpts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b.ctx = ctx
	chromedp.ListenTarget(ctx, b.onEvent)
	t.Cleanup(func() {
		if t.Failed() {
			b.dump()
		}
		b.close(cancelTab, cancelAlloc, cancelLife)
	})

	start := []chromedp.Action{cdplog.Enable()}
	if v := opts.Viewport; v != nil {
		scale := v.Scale
		if scale == 0 {
			scale = 1
		}
		vo := []chromedp.EmulateViewportOption{chromedp.EmulateScale(scale)}
		if v.Mobile {
			vo = append(vo, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
		}
		start = append(start, chromedp.EmulateViewport(v.Width, v.Height, vo...))
	}
	if err := chromedp.Run(ctx, start...); err != nil {
		t.Fatalf("starting chromium: %v\n%s", err, b.output.String())
	}
	if p := chromedp.FromContext(ctx).Browser.Process(); p != nil {
		b.pgid = p.Pid
	}
	return b
}

// Context returns the tab's context, for chromedp calls the helpers do not
// cover (chromedp.ListenTarget, a derived timeout).
func (b *Browser) Context() context.Context { return b.ctx }

// Run runs actions in the tab, bounded by the browser's lifetime.
func (b *Browser) Run(actions ...chromedp.Action) error {
	return chromedp.Run(b.ctx, actions...)
}

// RunTimeout runs actions in the tab, giving up after d.
func (b *Browser) RunTimeout(d time.Duration, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

// EvalJSON is an action that evaluates the JavaScript expression js, awaits
// it if it is a promise, and decodes its JSON value into out (a pointer; a
// *[]byte gets the raw JSON). A thrown exception is the action's error.
func EvalJSON(js string, out any) chromedp.Action {
	return chromedp.Evaluate(js, out, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	})
}

// Console returns the page's console messages, uncaught exceptions and
// browser log entries so far, one line each.
func (b *Browser) Console() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

func (b *Browser) onEvent(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			args = append(args, remoteString(a))
		}
		line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + remoteString(d.Exception)
		}
		line = fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, text)
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		line = fmt.Sprintf("log %s %s: %s %s", e.Source, e.Level, e.Text, e.URL)
	default:
		return
	}
	b.mu.Lock()
	b.console = append(b.console, line)
	b.mu.Unlock()
}

func remoteString(o *runtime.RemoteObject) string {
	switch {
	case o == nil:
		return ""
	case o.Type == runtime.TypeString:
		s, err := strconv.Unquote(string(o.Value))
		if err != nil {
			return string(o.Value)
		}
		return s
	case len(o.Value) > 0:
		return string(o.Value)
	case o.Description != "":
		return o.Description
	}
	return string(o.Type)
}

// dump writes the console and the tail of chromium's own output to the
// test log.
func (b *Browser) dump() {
	b.t.Helper()
	if c := b.Console(); len(c) > 0 {
		b.t.Logf("browser console:\n\t%s", strings.Join(c, "\n\t"))
	}
	var lines []string
	for _, l := range strings.Split(b.output.String(), "\n") {
		// No D-Bus in a container: Chromium complains on every start.
		if l != "" && !strings.Contains(l, ":ERROR:dbus/") {
			lines = append(lines, l)
		}
	}
	if out := strings.Join(lines, "\n"); out != "" {
		const keep = 8 << 10
		if len(out) > keep {
			out = "…" + out[len(out)-keep:]
		}
		b.t.Logf("chromium output:\n%s", out)
	}
}

// close shuts chromium down gracefully if it answers within five seconds,
// then kills whatever is left of it and waits for every process to go.
func (b *Browser) close(cancelTab, cancelAlloc, cancelLife context.CancelFunc) {
	b.t.Helper()
	done := make(chan struct{})
	go func() {
		chromedp.Cancel(b.ctx) // Browser.close over CDP; waits for the process
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	cancelTab()
	cancelAlloc() // kills the main process if still there, and waits for it
	cancelLife()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := b.processes()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.t.Errorf("chromium processes %v outlived the test", left)
			return
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes returns the live (not zombie) processes of this browser: those in
// its process group, and any that left the group (the crash handlers) but
// name its unique directory on their command line.
func (b *Browser) processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); b.pgid != 0 && g == b.pgid {
			pids = append(pids, pid)
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(b.dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// tailBuffer collects chromium's output, keeping the last 64 KiB.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (l *tailBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - 64<<10; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(p), nil
}

func (l *tailBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}
