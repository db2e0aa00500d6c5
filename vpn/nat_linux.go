package vpn

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// nat owns tariq's nftables table through one lasting netlink connection,
// opened in the network namespace of the caller of openNAT and used for
// every later change, whatever thread makes it.
type nat struct {
	conn  *nftables.Conn
	table *nftables.Table
}

// openNAT opens the netlink connection; opts let tests pick a namespace
// (nftables.WithNetNSFd).
func openNAT(opts ...nftables.ConnOption) (*nat, error) {
	c, err := nftables.New(append([]nftables.ConnOption{nftables.AsLasting()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return &nat{conn: c, table: &nftables.Table{Name: NATTable, Family: nftables.TableFamilyINet}}, nil
}

// apply replaces the table's contents with rules in one transaction, so
// there is never a moment without masquerading, and a table left over by a
// crashed run is replaced rather than duplicated.
func (n *nat) apply(rules []natRule) error {
	c := n.conn
	// "add; delete; add" in one batch: the add makes the delete succeed
	// whether or not the table exists; the kernel applies all or nothing.
	c.AddTable(n.table)
	c.DelTable(n.table)
	c.AddTable(n.table)
	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    n.table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   &accept,
	})
	for _, r := range rules {
		exprs, err := masqueradeExprs(r)
		if err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{
			Table:    n.table,
			Chain:    post,
			Exprs:    exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, "tariq vpn clients"),
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table inet %s: %w", NATTable, err)
	}
	return nil
}

// remove deletes the table if it exists.
func (n *nat) remove() error {
	n.conn.AddTable(n.table)
	n.conn.DelTable(n.table)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table inet %s: %w", NATTable, err)
	}
	return nil
}

func (n *nat) close() error { return n.conn.CloseLasting() }

// masqueradeExprs is `meta nfproto ipvX oifname OUT ipX saddr SRC counter
// masquerade`.
func masqueradeExprs(r natRule) ([]expr.Any, error) {
	if len(r.out) == 0 || len(r.out) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("uplink %q is not an interface name", r.out)
	}
	src := r.src.Masked()
	proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if src.Addr().Is6() {
		proto, off, size = unix.NFPROTO_IPV6, 8, 16
	}
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, r.out)
	mask := make([]byte, size)
	for i := range src.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Addr().AsSlice()},
		&expr.Counter{},
		&expr.Masq{},
	}, nil
}
