package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/daemon"
)

// exportFlags choose how a peer's config is handed over.
type exportFlags struct {
	qr     bool
	png    string
	output string
	force  bool
	invite bool
	ttl    time.Duration
}

func (f *exportFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.qr, "qr", false, "print a QR code for the WireGuard app to scan (of the link, with --invite)")
	cmd.Flags().StringVar(&f.png, "png", "", "write the QR code as a PNG to `FILE` (mode 0600)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "write the config (the link, with --invite) to `FILE`, mode 0600, instead of stdout")
	cmd.Flags().BoolVar(&f.force, "force", false, "replace an existing --output or --png file")
	cmd.Flags().BoolVar(&f.invite, "invite", false, "print a one-time link that shows and downloads the config")
	cmd.Flags().DurationVar(&f.ttl, "ttl", 72*time.Hour, "how long an --invite link stays valid")
}

// check refuses flags that cannot be honoured, before anything changes.
func (f *exportFlags) check(cmd *cobra.Command) error {
	if err := checkTTL(cmd, f.ttl); err != nil {
		return err
	}
	if cmd.Flags().Changed("ttl") && !f.invite {
		return usageErr(errors.New("--ttl applies only with --invite"))
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

// peers returns the peer manager and, for a change, says on stderr when no
// daemon runs.
func (a *app) peers(cmd *cobra.Command, change bool) (admin.Peers, error) {
	l, err := a.load()
	if err != nil {
		return nil, err
	}
	p, running, err := daemon.PeerAdmin(ctxOf(cmd), l.Config)
	if err != nil {
		return nil, err
	}
	if !running && change {
		fmt.Fprintln(a.stderr, "tariq: no daemon is running; changing the state directly (it applies when tariq starts)")
	}
	return p, nil
}

// export hands over pc as the flags ask: text, terminal QR, PNG, or a link.
func (a *app) export(cmd *cobra.Command, p admin.Peers, pc *admin.PeerConfig, f exportFlags) error {
	payload := pc.Config
	if f.invite {
		inv, err := p.CreateInvite(ctxOf(cmd), admin.InviteRequest{Peer: pc.Peer.Name, TTL: f.ttl})
		if err != nil {
			return err
		}
		payload = inv.URL
		fmt.Fprintf(a.stderr, "tariq: one-time link for %s, valid until %s; it stops working once the config is downloaded\n",
			inv.Peer, inv.Expires.Local().Format("2006-01-02 15:04"))
	} else if (f.qr || f.png != "") && strings.Contains(pc.Config, daemon.PrivateKeyPlaceholder) {
		return fmt.Errorf("peer %q brought its own key, so its config has no private key to put in a QR code; "+
			"print it as text and fill in PrivateKey on the device", pc.Peer.Name)
	}
	if pc.Peer.Obfuscated {
		fmt.Fprintf(a.stderr, "tariq: %s uses the obfuscated (AmneziaWG) form on UDP port %d: "+
			"import it in the AmneziaWG or AmneziaVPN app, not the WireGuard app\n", pc.Peer.Name, pc.Peer.Port)
	} else if l, err := a.load(); err == nil && pc.Peer.Port != 0 && pc.Peer.Port != l.VPN.ListenPort {
		fmt.Fprintf(a.stderr, "tariq: %s uses stock WireGuard on UDP port %d (not vpn.listen_port %d)\n",
			pc.Peer.Name, pc.Peer.Port, l.VPN.ListenPort)
	}
	if f.png != "" {
		png, err := daemon.QRPNG(payload)
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
		qr, err := daemon.QRText(payload)
		if err != nil {
			return err
		}
		fmt.Fprint(a.stdout, qr)
	case f.output == "" && (f.png == "" || f.invite):
		fmt.Fprint(a.stdout, text)
	}
	return nil
}

func (a *app) peerCmd() *cobra.Command {
	peer := &cobra.Command{
		Use:   "peer",
		Short: "Add, list, show, remove, disable and enable WireGuard devices",
		Long: `Manage the WireGuard devices of the family. While the daemon runs, changes go
through its admin socket and apply at once to that one peer; otherwise they
edit the state directly and apply when tariq starts.`,
	}

	var addFlags exportFlags
	var publicKey string
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

The device dials vpn.listen_port unless --port names one of vpn.extra_ports
(443, say, where the usual port is blocked). With --obfuscated it gets the
AmneziaWG form instead, for vpn.obfuscation.listen_port, to import in the
AmneziaWG or AmneziaVPN app: for networks that block WireGuard itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := addFlags.check(cmd); err != nil {
				return err
			}
			p, err := a.peers(cmd, true)
			if err != nil {
				return err
			}
			pc, err := p.AddPeer(ctxOf(cmd), admin.AddPeerRequest{Name: args[0], PublicKey: publicKey, Port: port, Obfuscated: obfuscated})
			if err != nil {
				return err
			}
			return a.export(cmd, p, pc, addFlags)
		},
	}
	addFlags.register(add)
	add.Flags().StringVar(&publicKey, "public-key", "", "the device's own WireGuard public key (base64)")
	add.Flags().IntVar(&port, "port", 0, "the UDP `PORT` the device dials: one of vpn.extra_ports (default vpn.listen_port)")
	add.Flags().BoolVar(&obfuscated, "obfuscated", false, "give the device the AmneziaWG form, for vpn.obfuscation.listen_port")

	var showFlags exportFlags
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a device's config, QR code, PNG or a new one-time link",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := showFlags.check(cmd); err != nil {
				return err
			}
			p, err := a.peers(cmd, showFlags.invite)
			if err != nil {
				return err
			}
			pc, err := p.PeerConfig(ctxOf(cmd), args[0])
			if err != nil {
				return err
			}
			return a.export(cmd, p, pc, showFlags)
		},
	}
	showFlags.register(show)

	list := &cobra.Command{
		Use:   "list",
		Short: "List the devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.peers(cmd, false)
			if err != nil {
				return err
			}
			peers, err := p.Peers(ctxOf(cmd))
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tIPV4\tIPV6\tSTATE\tLAST HANDSHAKE\tRECEIVED\tSENT")
			now := time.Now()
			for _, pe := range peers {
				state := "enabled"
				if !pe.Enabled {
					state = "disabled"
				}
				hs := "never"
				if !pe.LastHandshake.IsZero() {
					hs = now.Sub(pe.LastHandshake).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", pe.Name, pe.IPv4, pe.IPv6, state, hs, bytesStr(pe.RxBytes), bytesStr(pe.TxBytes))
			}
			return w.Flush()
		},
	}

	simple := func(use, short string, do func(cmd *cobra.Command, p admin.Peers, name string) error, done string) *cobra.Command {
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
		func(cmd *cobra.Command, p admin.Peers, name string) error { return p.RemovePeer(ctxOf(cmd), name) }, "removed")
	disable := simple("disable", "Cut a device off, keeping its config for later",
		func(cmd *cobra.Command, p admin.Peers, name string) error {
			return p.SetPeerEnabled(ctxOf(cmd), name, false)
		}, "disabled")
	enable := simple("enable", "Let a disabled device back in",
		func(cmd *cobra.Command, p admin.Peers, name string) error {
			return p.SetPeerEnabled(ctxOf(cmd), name, true)
		}, "enabled")

	peer.AddCommand(add, list, show, remove, disable, enable)
	return peer
}
