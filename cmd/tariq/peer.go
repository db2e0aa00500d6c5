package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/daemon"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// exportFlags choose how a peer's config is handed over.
type exportFlags struct {
	qr      bool
	png     string
	output  string
	force   bool
	invite  bool
	ttl     time.Duration
	outline bool
}

func (f *exportFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.qr, "qr", false, "print a QR code for the WireGuard app to scan (of the link, with --invite)")
	cmd.Flags().StringVar(&f.png, "png", "", "write the QR code as a PNG to `FILE` (mode 0600)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "write the config (the link, with --invite) to `FILE`, mode 0600, instead of stdout")
	cmd.Flags().BoolVar(&f.force, "force", false, "replace an existing --output or --png file")
	cmd.Flags().BoolVar(&f.invite, "invite", false, "print a one-time link that shows and downloads the config")
	cmd.Flags().DurationVar(&f.ttl, "ttl", 72*time.Hour, "how long an --invite link stays valid")
	cmd.Flags().BoolVar(&f.outline, "outline", false, "print the member's Outline key (an ssconf:// link for the Outline app) instead of the WireGuard config")
}

// check refuses flags that cannot be honoured, before anything changes.
func (f *exportFlags) check(cmd *cobra.Command) error {
	if err := checkTTL(cmd, f.ttl); err != nil {
		return err
	}
	if cmd.Flags().Changed("ttl") && !f.invite {
		return usageErr(errors.New("--ttl applies only with --invite"))
	}
	if f.outline && f.invite {
		return usageErr(errors.New("--outline and --invite: the link's page offers the Outline key itself when the network needs it"))
	}
	if f.output != "" && f.output == f.png {
		return usageErr(errors.New("--output and --png name the same file"))
	}
	for _, path := range []string{f.output, f.png} {
		if path != "" {
			if err := checkOutput(path, f.force); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTTL refuses a --ttl given as zero, negative or under a second,
// rather than replacing it with the default.
func checkTTL(cmd *cobra.Command, ttl time.Duration) error {
	if cmd.Flags().Changed("ttl") && ttl < time.Second {
		return usageErr(fmt.Errorf("--ttl %s: must be at least 1s", ttl))
	}
	return nil
}

// peers returns the members manager and, for a change, says on stderr when
// no daemon runs.
func (a *app) peers(cmd *cobra.Command, change bool) (members.Manager, error) {
	l, err := a.load()
	if err != nil {
		return nil, err
	}
	p, running, closeFn, err := daemon.Members(ctxOf(cmd), l.Config)
	if err != nil {
		return nil, err
	}
	a.onExit(closeFn)
	if !running && change {
		fmt.Fprintln(a.stderr, "tariq: no daemon is running; changing the state directly (it applies when tariq starts)")
	}
	return p, nil
}

// export hands over pc as the flags ask: text, terminal QR, PNG, or a link.
func (a *app) export(cmd *cobra.Command, p members.Manager, pc *members.DeviceConfig, f exportFlags) error {
	payload := pc.Config
	a.sayBlocked(pc.Device)
	if f.invite {
		inv, err := p.CreateInvite(ctxOf(cmd), pc.Device.Name, f.ttl)
		if err != nil {
			return err
		}
		payload = inv.URL
		fmt.Fprintf(a.stderr, "tariq: one-time link for %s, valid until %s; it stops working once the config is downloaded\n",
			inv.Peer, inv.Expires.Local().Format("2006-01-02 15:04"))
	} else if (f.qr || f.png != "") && strings.Contains(pc.Config, wgconf.PrivateKeyPlaceholder) {
		return fmt.Errorf("peer %q brought its own key, so its config has no private key to put in a QR code; "+
			"print it as text and fill in PrivateKey on the device", pc.Device.Name)
	}
	if pc.Device.Obfuscated {
		fmt.Fprintf(a.stderr, "tariq: %s uses the obfuscated (AmneziaWG) form on UDP port %d: "+
			"import it in the AmneziaWG or AmneziaVPN app, not the WireGuard app\n", pc.Device.Name, pc.Device.Port)
	} else if l, err := a.load(); err == nil && pc.Device.Port != 0 && pc.Device.Port != l.VPN.ListenPort {
		fmt.Fprintf(a.stderr, "tariq: %s uses stock WireGuard on UDP port %d (not vpn.listen_port %d)\n",
			pc.Device.Name, pc.Device.Port, l.VPN.ListenPort)
	}
	return a.hand(payload, f)
}

// hand writes payload (a config, a link or a key) as the flags ask: a PNG
// QR code, a file, a terminal QR code, or stdout.
func (a *app) hand(payload string, f exportFlags) error {
	if f.png != "" {
		png, err := wgconf.QRPNG(payload, 768)
		if err != nil {
			return err
		}
		if err := writePrivate(f.png, png, f.force); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "tariq: wrote %s (mode 0600)\n", f.png)
	}
	text := strings.TrimRight(payload, "\n") + "\n"
	if f.output != "" {
		if err := writePrivate(f.output, []byte(text), f.force); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "tariq: wrote %s (mode 0600)\n", f.output)
	}
	switch {
	case f.qr:
		qr, err := wgconf.QRText(payload)
		if err != nil {
			return err
		}
		fmt.Fprint(a.stdout, qr)
	case f.output == "" && (f.png == "" || f.invite):
		fmt.Fprint(a.stdout, text)
	}
	return nil
}

// exportOutline hands over the Outline key of name's member as the flags
// ask: the ssconf:// link as text (one line), a terminal QR code or a PNG.
func (a *app) exportOutline(cmd *cobra.Command, p members.Manager, name string, f exportFlags) error {
	k, err := p.OutlineKey(ctxOf(cmd), name)
	if err != nil {
		return err
	}
	switch k.Off {
	case members.OutlineOffDisabled:
		fmt.Fprintf(a.stderr, "tariq: %s's Outline key is off while every device of theirs is disabled; it works again, unchanged, once one is enabled\n", k.Member)
	case members.BlockExpired, members.BlockOverLimit:
		a.sayBlocked(members.DeviceStatus{Name: name, Member: k.Member, Blocked: k.Off})
	}
	return a.hand(k.Key, f)
}

// outlineRefusal returns the error for which name's member could not get
// an Outline key, checked before a device is added: nil when the server
// hands out keys (the member does not exist yet).
func outlineRefusal(cmd *cobra.Command, p members.Manager, name string) error {
	_, err := p.OutlineKey(ctxOf(cmd), name)
	var ae *admin.Error
	switch {
	case err == nil, errors.Is(err, members.ErrPeerNotFound), errors.As(err, &ae) && ae.Code == http.StatusNotFound:
		return nil
	}
	return err
}

// limitFlags are --expires, --data-limit and --rate.
type limitFlags struct {
	expires, dataLimit, rate string
}

func (f *limitFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.expires, "expires", "", "when the member's access ends: a date (2027-01-31, through that day UTC), an RFC 3339 time, a duration from now (30d, 12h), or none")
	cmd.Flags().StringVar(&f.dataLimit, "data-limit", "", "the member's data per calendar month (UTC), both directions, every path: like 5GiB or 500MB, or none")
	cmd.Flags().StringVar(&f.rate, "rate", "", "the member's speed cap in each direction, across their devices: like 4mbit or 512kbit, or none")
}

// change parses the flags given into a change; a bad value is usage.
func (f *limitFlags) change(cmd *cobra.Command, now time.Time) (members.LimitsChange, error) {
	var c members.LimitsChange
	if cmd.Flags().Changed("expires") {
		t, err := members.ParseExpires(f.expires, now)
		if err != nil {
			return c, usageErr(err)
		}
		c.Expires = &t
	}
	if cmd.Flags().Changed("data-limit") {
		n, err := members.ParseDataLimit(f.dataLimit)
		if err != nil {
			return c, usageErr(err)
		}
		c.DataLimit = &n
	}
	if cmd.Flags().Changed("rate") {
		n, err := members.ParseRate(f.rate)
		if err != nil {
			return c, usageErr(err)
		}
		c.Rate = &n
	}
	return c, nil
}

// sayBlocked tells the operator, on stderr, that d's member is cut off and
// how to let them back in.
func (a *app) sayBlocked(d members.DeviceStatus) {
	switch d.Blocked {
	case members.BlockExpired:
		fmt.Fprintf(a.stderr, "tariq: %s is cut off: member %s expired; `tariq peer set %s --expires ...` lets them back in with this config\n",
			d.Name, d.Member, d.Member)
	case members.BlockOverLimit:
		fmt.Fprintf(a.stderr, "tariq: %s is cut off: member %s used this month's data limit; it comes back next month, or now with `tariq peer set %s --data-limit ...`\n",
			d.Name, d.Member, d.Member)
	}
}

// memberLine describes a member's limits and usage in one line.
func memberLine(m members.MemberStatus, now time.Time) string {
	var parts []string
	used := "used " + bytesStr(m.Usage.Total()) + " this month"
	if m.DataLimit > 0 {
		used += " of " + bytesStr(m.DataLimit)
	}
	parts = append(parts, used)
	if m.Rate > 0 {
		parts = append(parts, "rate "+members.FormatRate(m.Rate))
	}
	if !m.Expires.IsZero() {
		parts = append(parts, "expires "+m.Expires.UTC().Format("2006-01-02 15:04 UTC"))
	}
	state := "active"
	if m.Blocked != "" {
		state = "cut off: " + m.Blocked
	}
	return fmt.Sprintf("member %s (%s): %s", m.Name, state, strings.Join(parts, ", "))
}

func (a *app) peerCmd() *cobra.Command {
	peer := &cobra.Command{
		Use:   "peer",
		Short: "Add, list, show, limit, remove, disable and enable family members' devices",
		Long: `Manage the family's members and their WireGuard devices. A member is a person;
each device (a peer) belongs to one member, by default one of its own name
(--member puts more devices under one person). Limits (--expires,
--data-limit, --rate) belong to the member, across all their devices.

While the daemon runs, changes go through its admin socket and apply at once
to that one member; otherwise they edit the state directly and apply when
tariq starts.`,
	}

	var addFlags exportFlags
	var addLimits limitFlags
	var publicKey, member string
	var port int
	var obfuscated bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a device; print its config, QR code, PNG or a one-time link",
		Long: `Add a device: it gets a key pair (or, with --public-key, keeps the one it made
itself, so the server never holds its private key), a preshared key and the
next free addresses. The wg-quick config goes to stdout unless --qr, --png or
--invite asks for another form; "tariq peer add mom --output mom.conf" writes
it to a file only you can read (a shell's "> mom.conf" leaves the private
key readable by everyone on the machine).

The device belongs to the member --member names (a new member of the
device's own name if not given). --expires, --data-limit and --rate set that
member's limits, as "tariq peer set" does.

The device dials vpn.listen_port unless --port names one of vpn.extra_ports
(443, say, where the usual port is blocked). With --obfuscated it gets the
AmneziaWG form instead, for vpn.obfuscation.listen_port, to import in the
AmneziaWG or AmneziaVPN app: for networks that block WireGuard itself.

With --outline it prints the member's Outline key instead: an ssconf://
link to paste into the Outline app (or --qr to scan), for networks where no
UDP gets through. It needs vpn.outline.enabled and a publicly trusted
certificate; the key belongs to the member, across their devices.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := addFlags.check(cmd); err != nil {
				return err
			}
			lc, err := addLimits.change(cmd, time.Now())
			if err != nil {
				return err
			}
			p, err := a.peers(cmd, true)
			if err != nil {
				return err
			}
			if addFlags.outline {
				// No device for a key that cannot be handed out.
				if err := outlineRefusal(cmd, p, args[0]); err != nil {
					return err
				}
			}
			pc, err := p.Add(ctxOf(cmd), members.AddRequest{Name: args[0], Member: member, PublicKey: publicKey, Port: port,
				Obfuscated: obfuscated, Limits: lc})
			if err != nil {
				return err
			}
			if addFlags.outline {
				return a.exportOutline(cmd, p, pc.Device.Name, addFlags)
			}
			return a.export(cmd, p, pc, addFlags)
		},
	}
	addFlags.register(add)
	addLimits.register(add)
	add.Flags().StringVar(&member, "member", "", "the member (person) the device belongs to (default: a new member named like the device)")
	add.Flags().StringVar(&publicKey, "public-key", "", "the device's own WireGuard public key (base64)")
	add.Flags().IntVar(&port, "port", 0, "the UDP `PORT` the device dials: one of vpn.extra_ports (default vpn.listen_port)")
	add.Flags().BoolVar(&obfuscated, "obfuscated", false, "give the device the AmneziaWG form, for vpn.obfuscation.listen_port")

	var setLimits limitFlags
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Set a member's limits: --expires, --data-limit, --rate (none lifts one)",
		Long: `Set the limits of a member (NAME is the member, or one of their devices):

  --expires     when their access ends: a date (through that day, UTC), an
                RFC 3339 time, or a duration from now (30d, 12h)
  --data-limit  data per calendar month (UTC), both directions together, on
                every path they use: 5GiB, 500MB
  --rate        a speed cap in each direction, shared by their devices:
                4mbit, 512kbit (calls stay usable: small packets go first)

"none" lifts a limit. A member who expires or reaches the limit is cut off
within seconds (no handshakes, open tunnels end) and shown so in status,
peer list and their invite page; lifting or raising the limit, or the next
month, lets them back in with the configs they have.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lc, err := setLimits.change(cmd, time.Now())
			if err != nil {
				return err
			}
			if lc.Empty() {
				return usageErr(errors.New("nothing to set: give --expires, --data-limit or --rate"))
			}
			p, err := a.peers(cmd, true)
			if err != nil {
				return err
			}
			m, err := p.SetLimits(ctxOf(cmd), args[0], lc)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "tariq: %s\n", memberLine(*m, time.Now()))
			return nil
		},
	}
	setLimits.register(set)

	var showFlags exportFlags
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a device's config, QR code, PNG, a new one-time link, or its member's Outline key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := showFlags.check(cmd); err != nil {
				return err
			}
			p, err := a.peers(cmd, showFlags.invite)
			if err != nil {
				return err
			}
			if showFlags.outline {
				return a.exportOutline(cmd, p, args[0], showFlags)
			}
			pc, err := p.Show(ctxOf(cmd), args[0])
			if err != nil {
				return err
			}
			return a.export(cmd, p, pc, showFlags)
		},
	}
	showFlags.register(show)

	list := &cobra.Command{
		Use:   "list",
		Short: "List the devices and members, with limits and this month's usage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.peers(cmd, false)
			if err != nil {
				return err
			}
			devices, err := p.Devices(ctxOf(cmd))
			if err != nil {
				return err
			}
			ms, err := p.Members(ctxOf(cmd))
			if err != nil {
				return err
			}
			now := time.Now()
			w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tMEMBER\tIPV4\tIPV6\tSTATE\tLAST HANDSHAKE\tRECEIVED\tSENT")
			for _, d := range devices {
				hs := "never"
				if !d.LastHandshake.IsZero() {
					hs = now.Sub(d.LastHandshake).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Member, d.IPv4, d.IPv6, deviceState(d), hs,
					bytesStr(d.RxBytes), bytesStr(d.TxBytes))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(ms) > 0 {
				fmt.Fprintln(a.stdout)
				printMembers(a.stdout, ms, now)
			}
			return nil
		},
	}

	simple := func(use, short string, do func(cmd *cobra.Command, p members.Manager, name string) error, done string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				p, err := a.peers(cmd, true)
				if err != nil {
					return err
				}
				if err := do(cmd, p, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "tariq: %s %s\n", done, args[0])
				return nil
			},
		}
	}
	remove := simple("remove", "Remove a device for good (its address is not handed out again while others are free)",
		func(cmd *cobra.Command, p members.Manager, name string) error { return p.Remove(ctxOf(cmd), name) }, "removed")
	disable := simple("disable", "Cut a device off, keeping its config for later",
		func(cmd *cobra.Command, p members.Manager, name string) error {
			return p.SetEnabled(ctxOf(cmd), name, false)
		}, "disabled")
	enable := simple("enable", "Let a disabled device back in",
		func(cmd *cobra.Command, p members.Manager, name string) error {
			return p.SetEnabled(ctxOf(cmd), name, true)
		}, "enabled")

	peer.AddCommand(add, set, list, show, remove, disable, enable)
	return peer
}

// deviceState is a device's state for tables: enabled, disabled, or why
// its member is cut off.
func deviceState(d members.DeviceStatus) string {
	switch {
	case !d.Enabled:
		return "disabled"
	case d.Blocked != "":
		return d.Blocked
	}
	return "enabled"
}

// printMembers writes the members table: limits and this month's usage.
func printMembers(out io.Writer, ms []members.MemberStatus, now time.Time) {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintln(w, "MEMBER\tDEVICES\tSTATE\tTHIS MONTH\tDATA LIMIT\tRATE\tEXPIRES\tOUTLINE\tSEEN WORKING")
	for _, m := range ms {
		state := "active"
		if m.Blocked != "" {
			state = m.Blocked
		}
		limit, rate, expires := "-", "-", "-"
		if m.DataLimit > 0 {
			limit = bytesStr(m.DataLimit)
		}
		if m.Rate > 0 {
			rate = members.FormatRate(m.Rate)
		}
		if !m.Expires.IsZero() {
			expires = m.Expires.UTC().Format("2006-01-02 15:04 UTC")
			if m.Expires.After(now) {
				expires += " (in " + shortDuration(m.Expires.Sub(now)) + ")"
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, len(m.Devices), state, bytesStr(m.Usage.Total()), limit, rate, expires,
			outlineActivity(m.Outline, now), seenStr(m.Seen))
	}
}

// outlineActivity describes a member's Outline connections: open now,
// made since the daemon started, bytes both ways, the last one.
func outlineActivity(o *members.MemberLive, now time.Time) string {
	switch {
	case o == nil:
		return "-"
	case o.Total == 0:
		return "never connected"
	}
	return fmt.Sprintf("%d open, %d since start, %s, last %s ago", o.Open, o.Total, bytesStr(o.In+o.Out),
		shortDuration(now.Sub(o.LastSeen)))
}

// seenStr lists the paths seen working for a member, or "-".
func seenStr(seen []string) string {
	if len(seen) == 0 {
		return "-"
	}
	return strings.Join(seen, ", ")
}

// shortDuration writes d in days and hours, or less for short ones.
func shortDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return d.Round(time.Second).String()
}
