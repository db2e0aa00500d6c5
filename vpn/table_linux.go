package vpn

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/tariq-vpn/tariq/internal/addrpolicy"
)

// nft owns tariq's nftables table through one lasting netlink connection,
// opened in the network namespace of the caller of openNFT and used for
// every later change, whatever thread makes it.
type nft struct {
	conn  *nftables.Conn
	table *nftables.Table
}

// openNFT opens the netlink connection; opts let tests pick a namespace
// (nftables.WithNetNSFd).
func openNFT(opts ...nftables.ConnOption) (*nft, error) {
	c, err := nftables.New(append([]nftables.ConnOption{nftables.AsLasting()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return &nft{conn: c, table: &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}}, nil
}

// The sets' names.
const (
	setHost4, setHost6       = "host4", "host6"
	setAllow4, setAllow6     = "allow4", "allow6"
	setDeny4, setDeny6       = "deny4", "deny6"
	setSpecial4, setSpecial6 = "special4", "special6"
	setUDP, setTCP           = "udp_services", "tcp_services"
)

// apply replaces the table with what spec says, in one transaction, so
// there is never a moment without the filter or masquerading, and a table
// left over by a crashed run is replaced rather than duplicated.
func (n *nft) apply(spec tableSpec) error {
	c := n.conn
	// "add; delete; add" in one batch: the add makes the delete succeed
	// whether or not the table exists; the kernel applies all or nothing.
	c.AddTable(n.table)
	c.DelTable(n.table)
	c.AddTable(n.table)
	b := &builder{c: c, t: n.table, sets: map[string]*nftables.Set{}}

	allow4, allow6 := split(spec.dest.Allow)
	deny4, deny6 := split(spec.dest.Deny)
	host4, host6 := split(spec.host)
	var special []netip.Prefix
	for _, r := range addrpolicy.Special() {
		special = append(special, r.Prefix)
	}
	special4, special6 := split(special)
	var udp, tcp [][2]uint16
	for _, p := range spec.services {
		r := [2]uint16{p.Ports.Min, p.Ports.Max}
		if p.Proto == "udp" {
			udp = append(udp, r)
		} else {
			tcp = append(tcp, r)
		}
	}
	for _, s := range []struct {
		name string
		v6   bool
		ps   []netip.Prefix
	}{
		{setHost4, false, host4}, {setHost6, true, host6},
		{setDeny4, false, deny4}, {setDeny6, true, deny6},
		{setAllow4, false, allow4}, {setAllow6, true, allow6},
		{setSpecial4, false, special4}, {setSpecial6, true, special6},
	} {
		if err := b.addrSet(s.name, s.v6, s.ps); err != nil {
			return err
		}
	}
	for _, s := range []struct {
		name   string
		ranges [][2]uint16
	}{{setUDP, udp}, {setTCP, tcp}} {
		if err := b.portSet(s.name, s.ranges); err != nil {
			return err
		}
	}
	if err := b.memberOut(spec, len(deny4) > 0); err != nil {
		return err
	}
	if err := b.memberIn(spec); err != nil {
		return err
	}
	if len(spec.nat) > 0 {
		if err := b.postrouting(spec.nat); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table inet %s: %w", Table, err)
	}
	return nil
}

// setHost rewrites host4 and host6, the server itself, in one transaction.
func (n *nft) setHost(host []netip.Prefix) error {
	c := n.conn
	h4, h6 := split(host)
	for _, s := range []struct {
		name string
		v6   bool
		ps   []netip.Prefix
	}{{setHost4, false, h4}, {setHost6, true, h6}} {
		set := &nftables.Set{Table: n.table, Name: s.name, KeyType: addrType(s.v6), Interval: true}
		c.FlushSet(set)
		if els := addrElements(s.ps); len(els) > 0 {
			if err := c.SetAddElements(set, els); err != nil {
				return fmt.Errorf("set %s: %w", s.name, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("updating the server's addresses in nftables table inet %s: %w", Table, err)
	}
	return nil
}

// remove deletes the table if it exists.
func (n *nft) remove() error {
	n.conn.AddTable(n.table)
	n.conn.DelTable(n.table)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table inet %s: %w", Table, err)
	}
	return nil
}

func (n *nft) close() error { return n.conn.CloseLasting() }

// builder adds one table's sets, chains and rules to a batch.
type builder struct {
	c    *nftables.Conn
	t    *nftables.Table
	sets map[string]*nftables.Set
}

func addrType(v6 bool) nftables.SetDatatype {
	if v6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// addrElements are the interval elements of ps: each merged range's first
// address, and the address after its last flagged as an interval's end
// (none after the family's last address).
func addrElements(ps []netip.Prefix) []nftables.SetElement {
	var els []nftables.SetElement
	for _, s := range spans(ps) {
		els = append(els, nftables.SetElement{Key: s.first.AsSlice()})
		if end := s.last.Next(); end.IsValid() {
			els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

func (b *builder) addrSet(name string, v6 bool, ps []netip.Prefix) error {
	s := &nftables.Set{Table: b.t, Name: name, KeyType: addrType(v6), Interval: true}
	if err := b.c.AddSet(s, addrElements(ps)); err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	b.sets[name] = s
	return nil
}

// portSet adds an interval set of ports; ranges may overlap.
func (b *builder) portSet(name string, ranges [][2]uint16) error {
	var els []nftables.SetElement
	for _, r := range mergePorts(ranges) {
		els = append(els, nftables.SetElement{Key: binary.BigEndian.AppendUint16(nil, r[0])})
		if r[1] < 0xffff {
			els = append(els, nftables.SetElement{Key: binary.BigEndian.AppendUint16(nil, r[1]+1), IntervalEnd: true})
		}
	}
	s := &nftables.Set{Table: b.t, Name: name, KeyType: nftables.TypeInetService, Interval: true}
	if err := b.c.AddSet(s, els); err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	b.sets[name] = s
	return nil
}

func (b *builder) chain(name string, hook *nftables.ChainHook, typ nftables.ChainType, prio *nftables.ChainPriority) *nftables.Chain {
	ch := &nftables.Chain{Name: name, Table: b.t}
	if hook != nil {
		accept := nftables.ChainPolicyAccept
		ch.Hooknum, ch.Type, ch.Priority, ch.Policy = hook, typ, prio, &accept
	}
	return b.c.AddChain(ch)
}

func (b *builder) rule(ch *nftables.Chain, comment string, exprs ...[]expr.Any) {
	var all []expr.Any
	for _, e := range exprs {
		all = append(all, e...)
	}
	r := &nftables.Rule{Table: b.t, Chain: ch, Exprs: all}
	if comment != "" {
		r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
	}
	b.c.AddRule(r)
}

// memberOut is the forward hook's jump for traffic from the tunnel and the
// destination policy, in addrpolicy.Destinations' order.
func (b *builder) memberOut(spec tableSpec, deny4 bool) error {
	name, err := ifname(spec.tunnel)
	if err != nil {
		return err
	}
	fwd := b.chain("forward", nftables.ChainHookForward, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	out := b.chain("member_out", nil, "", nil)
	b.rule(fwd, "", meta(expr.MetaKeyIIFNAME, name), jump(out.Name))

	drop, accept := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	b.rule(out, addrpolicy.RuleDeny, daddrIn(false, b.sets[setDeny4]), drop)
	b.rule(out, addrpolicy.RuleDeny, daddrIn(true, b.sets[setDeny6]), drop)
	if deny4 {
		for _, e := range addrpolicy.Embeddings() {
			b.rule(out, addrpolicy.RuleDeny, embeddedIn(e, b.sets[setDeny4]), drop)
		}
	}
	b.rule(out, "ipv4-mapped", daddrPrefix(netip.MustParsePrefix("::ffff:0:0/96")), drop)
	b.rule(out, "server", daddrIn(false, b.sets[setHost4]), drop)
	b.rule(out, "server", daddrIn(true, b.sets[setHost6]), drop)
	members := drop
	if spec.dest.MemberToMember {
		members = accept
	}
	for _, p := range spec.dest.Members {
		b.rule(out, addrpolicy.RuleMember, daddrPrefix(p), members)
	}
	b.rule(out, addrpolicy.RuleAllowList, daddrIn(false, b.sets[setAllow4]), accept)
	b.rule(out, addrpolicy.RuleAllowList, daddrIn(true, b.sets[setAllow6]), accept)
	b.rule(out, "special-purpose", daddrIn(false, b.sets[setSpecial4]), drop)
	b.rule(out, "special-purpose", daddrIn(true, b.sets[setSpecial6]), drop)
	return nil
}

// memberIn is the input hook's jump for traffic from the tunnel: what of
// the server members reach.
func (b *builder) memberIn(spec tableSpec) error {
	name, err := ifname(spec.tunnel)
	if err != nil {
		return err
	}
	in := b.chain("input", nftables.ChainHookInput, nftables.ChainTypeFilter, nftables.ChainPriorityFilter)
	mi := b.chain("member_in", nil, "", nil)
	b.rule(in, "", meta(expr.MetaKeyIIFNAME, name), jump(mi.Name))

	accept := verdict(expr.VerdictAccept)
	b.rule(mi, "", ctEstablished(), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}})
	for _, a := range spec.tunnelAddrs {
		icmp, echo := byte(unix.IPPROTO_ICMP), byte(8)
		if a.Is6() {
			icmp, echo = unix.IPPROTO_ICMPV6, 128
		}
		b.rule(mi, "ping", daddrPrefix(netip.PrefixFrom(a, a.BitLen())), l4proto(icmp),
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{echo}},
			}, accept)
	}
	for _, a := range spec.tunnelAddrs {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			b.rule(mi, "dns", daddrPrefix(netip.PrefixFrom(a, a.BitLen())), l4proto(proto),
				dport(), []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}}}, accept)
		}
	}
	b.rule(mi, "tariq", l4proto(unix.IPPROTO_UDP), dport(), lookup(b.sets[setUDP]), accept)
	b.rule(mi, "tariq", l4proto(unix.IPPROTO_TCP), dport(), lookup(b.sets[setTCP]), accept)
	b.rule(mi, "server", verdict(expr.VerdictDrop))
	return nil
}

// postrouting masquerades members' traffic out of the uplinks.
func (b *builder) postrouting(rules []natRule) error {
	post := b.chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainTypeNAT, nftables.ChainPriorityNATSource)
	for _, r := range rules {
		exprs, err := masqueradeExprs(r)
		if err != nil {
			return err
		}
		b.rule(post, "tariq vpn clients", exprs)
	}
	return nil
}

// masqueradeExprs is `meta nfproto ipvX oifname OUT ipX saddr SRC counter
// masquerade`.
func masqueradeExprs(r natRule) ([]expr.Any, error) {
	name, err := ifname(r.out)
	if err != nil {
		return nil, fmt.Errorf("uplink %w", err)
	}
	src := r.src.Masked()
	off := uint32(12)
	if src.Addr().Is6() {
		off = 8
	}
	var out []expr.Any
	out = append(out, nfproto(src.Addr().Is6())...)
	out = append(out, meta(expr.MetaKeyOIFNAME, name)...)
	out = append(out, prefixAt(off, src)...)
	return append(out, &expr.Counter{}, &expr.Masq{}), nil
}

// ifname is an interface name as nftables compares it: IFNAMSIZ bytes.
func ifname(s string) ([]byte, error) {
	if len(s) == 0 || len(s) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("%q is not an interface name", s)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b, nil
}

// meta is `meta KEY == data`.
func meta(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

func nfproto(v6 bool) []expr.Any {
	if v6 {
		return meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV6})
	}
	return meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4})
}

func l4proto(p byte) []expr.Any { return meta(expr.MetaKeyL4PROTO, []byte{p}) }

// daddr loads the destination address into register 1.
func daddr(v6 bool) []expr.Any {
	if v6 {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}}
	}
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}}
}

func lookup(s *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}}
}

// daddrIn is `ipX daddr @set`.
func daddrIn(v6 bool, s *nftables.Set) []expr.Any {
	return append(append(nfproto(v6), daddr(v6)...), lookup(s)...)
}

// daddrPrefix is `ipX daddr PREFIX`.
func daddrPrefix(p netip.Prefix) []expr.Any {
	off := uint32(16)
	if p.Addr().Is6() {
		off = 24
	}
	return append(nfproto(p.Addr().Is6()), prefixAt(off, p)...)
}

// prefixAt matches the address at network-header offset off against p.
func prefixAt(off uint32, p netip.Prefix) []expr.Any {
	size := uint32(p.Addr().BitLen() / 8)
	mask := make([]byte, size)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// embeddedIn matches an IPv6 destination of form e whose IPv4 address is
// in the IPv4 set s: `ip6 daddr PREFIX [ip6 daddr != NOT] @nh,OFF,32 @s`.
func embeddedIn(e addrpolicy.Embedding, s *nftables.Set) []expr.Any {
	out := daddrPrefix(e.Prefix)
	if e.NotPrefix.IsValid() {
		np := prefixAt(24, e.NotPrefix)
		np[2].(*expr.Cmp).Op = expr.CmpOpNeq
		out = append(out, np...)
	}
	out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24 + uint32(e.Offset), Len: 4})
	if e.Inverted {
		ones := []byte{0xff, 0xff, 0xff, 0xff}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ones, Xor: ones})
	}
	return append(out, lookup(s)...)
}

// dport loads the transport header's destination port into register 1.
func dport() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
}

// ctEstablished is `ct state established,related`.
func ctEstablished() []expr.Any {
	bits := binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: bits, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// verdict is `counter VERDICT`.
func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: k}}
}
