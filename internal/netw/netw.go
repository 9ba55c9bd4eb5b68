// Package netw is banger's host networking for VMs: a Linux bridge holding the
// gateway address, a warm pool of persistent TAP devices attached to it with
// bridge port isolation, NAT and filtering in banger's own nftables table, and
// a small DNS server on the gateway that answers `<vm>.vm` and forwards the
// rest to the host's resolvers.
//
// Lifecycle: New validates a Config; Setup builds (or re-adopts, after a
// daemon restart) the bridge, ip_forward, the nftables table, the tap pool and
// starts DNS. AcquireTap/ReleaseTap hand taps to VMs; MarkInUse re-claims the
// taps of VMs that outlived a daemon restart and should be called before the
// first AcquireTap. Close stops DNS and the pool refiller but keeps the bridge,
// taps and nftables table, because VMs outlive the daemon. Teardown removes
// everything banger made: its table, all its taps and the bridge.
//
// Terms: a pool tap is named tap-pool-<i> for i < TapPoolSize and returns to
// the pool when released; a non-pool tap (banger-tap-<hex>) is made on a pool
// miss and deleted when released.
package netw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"

	"banger/internal/api"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultBridge  = "banger0"
	DefaultTable   = "banger"
	DefaultDNSPort = 53
	// MaxTapPoolSize bounds TapPoolSize; taps are cheap but not free.
	MaxTapPoolSize = 256
)

// DefaultSubnet is the VM subnet used when Config.Subnet is unset.
var DefaultSubnet = netip.MustParsePrefix("10.203.0.0/24")

// Config describes banger's host network.
type Config struct {
	// Bridge is the Linux bridge name (default banger0).
	Bridge string
	// Subnet is the IPv4 VM subnet; the gateway is its first host address.
	Subnet netip.Prefix
	// TapPoolSize is how many warm taps (tap-pool-0..N-1) Setup keeps.
	TapPoolSize int
	// Table is the name of banger's own nftables table in the inet family
	// (default "banger"). No other table is ever touched.
	Table string
	// DNSUpstreams are the resolvers ("ip" or "ip:port") that non-.vm
	// queries are forwarded to (default: the nameservers of /etc/resolv.conf).
	DNSUpstreams []string
	// DNSPort is the port the DNS server listens on at the gateway (default 53).
	DNSPort int
	// GlobalAllow are destinations (CIDR or IP, optional :port) every VM
	// in mode internet or allow reaches even on a private range: a
	// corporate proxy, a package mirror.
	GlobalAllow []string
}

// Manager owns banger's host network. It is safe for concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	gateway netip.Addr

	dns *dnsServer

	mu sync.Mutex // guards the fields below
	// free holds idle pool taps, in order of index.
	free []string
	// inUse holds every tap handed out (pool or not) or marked in use.
	inUse map[string]bool
	// refill, when non-nil, wakes the pool refiller; stop ends it.
	refill  chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	setUp   bool

	gmu sync.Mutex // guards the fields below
	// guests are the bound VMs, by name (guest.go).
	guests map[string]*guestState
	// attached are the subnets of the host's interfaces, denied to mode
	// internet; read when the table is written.
	attached []netip.Prefix
	// globalAllow is Config.GlobalAllow parsed (set by New only).
	globalAllow []cidrEntry
}

var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// New validates cfg, fills in defaults and returns a Manager. It touches
// nothing on the host; Setup does.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.DNSPort == 0 {
		cfg.DNSPort = DefaultDNSPort
	}
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	if cfg.DNSUpstreams == nil {
		cfg.DNSUpstreams = resolvConfUpstreams("/etc/resolv.conf")
	}
	allow, err := parseGlobalAllow(cfg.GlobalAllow)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:         cfg,
		log:         log.With("component", "netw"),
		gateway:     cfg.Subnet.Addr().Next(),
		inUse:       map[string]bool{},
		guests:      map[string]*guestState{},
		globalAllow: allow,
	}
	m.dns = newDNSServer(cfg.Subnet, cfg.DNSUpstreams, m.log)
	m.dns.allowed, m.dns.learn = m.dnsAllowed, m.dnsLearn
	return m, nil
}

func validate(cfg *Config) error {
	if !ifNameRE.MatchString(cfg.Bridge) {
		return api.Invalid("bridge name %q is not a valid interface name", cfg.Bridge).
			WithFix("use 1-15 letters, digits, '-', '_' or '.', e.g. bridge = \"banger0\"")
	}
	if isBangerTapName(cfg.Bridge) {
		return api.Invalid("bridge name %q collides with banger's tap names", cfg.Bridge).
			WithFix("choose a bridge name not starting with tap-pool- or banger-tap-")
	}
	if !cfg.Subnet.Addr().Is4() {
		return api.Invalid("subnet %s is not IPv4", cfg.Subnet).WithFix("set subnet to an IPv4 prefix such as 10.203.0.0/24")
	}
	if b := cfg.Subnet.Bits(); b < 8 || b > 29 {
		return api.Invalid("subnet %s has prefix length /%d, want /8../29", cfg.Subnet, b).
			WithFix("set subnet to a prefix such as 10.203.0.0/24")
	}
	if cfg.Subnet.Masked() != cfg.Subnet {
		return api.Invalid("subnet %s has host bits set", cfg.Subnet).
			WithFix(fmt.Sprintf("use subnet = %q", cfg.Subnet.Masked()))
	}
	if cfg.TapPoolSize < 0 || cfg.TapPoolSize > MaxTapPoolSize {
		return api.Invalid("tap_pool_size %d is out of range 0..%d", cfg.TapPoolSize, MaxTapPoolSize).
			WithFix("set tap_pool_size to a small number such as 4")
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`).MatchString(cfg.Table) {
		return api.Invalid("nftables table name %q is invalid", cfg.Table).WithFix("use letters, digits, '-' or '_'")
	}
	if cfg.DNSPort < 1 || cfg.DNSPort > 65535 {
		return api.Invalid("dns port %d is out of range 1..65535", cfg.DNSPort).WithFix("leave it unset for 53")
	}
	for i, u := range cfg.DNSUpstreams {
		norm, err := normalizeUpstream(u)
		if err != nil {
			return api.Invalid("dns upstream %q: %w", u, err).WithFix("use an IP address, optionally with :port")
		}
		cfg.DNSUpstreams[i] = norm
	}
	return nil
}

// normalizeUpstream turns "ip" or "ip:port" into "ip:port".
func normalizeUpstream(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", errors.New("not an IP address or IP:port")
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// Config returns the effective configuration (defaults filled in).
func (m *Manager) Config() Config { return m.cfg }

// Gateway returns the bridge address, the VMs' default gateway and resolver.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

// Netmask returns the subnet mask in dotted form (e.g. 255.255.255.0), as the
// kernel's ip= command line parameter wants it.
func (m *Manager) Netmask() string {
	return net.IP(net.CIDRMask(m.cfg.Subnet.Bits(), 32)).String()
}

// Bridge returns the bridge name.
func (m *Manager) Bridge() string { return m.cfg.Bridge }

// DNSAddr returns the address the DNS server listens on (gateway:port).
func (m *Manager) DNSAddr() string {
	return net.JoinHostPort(m.gateway.String(), strconv.Itoa(m.cfg.DNSPort))
}

// SetHost makes name.vm resolve to ip (and ip back to name.vm).
func (m *Manager) SetHost(name string, ip netip.Addr) { m.dns.setHost(name, ip) }

// RemoveHost forgets name.vm.
func (m *Manager) RemoveHost(name string) { m.dns.removeHost(name) }

// Setup creates or re-adopts the bridge with the gateway address, enables
// ip_forward, (re)writes banger's nftables table, fills the tap pool and
// starts the DNS server. It is idempotent: a second run, in this process or
// after a daemon restart, keeps existing pool taps and taps in use. On
// failure everything this call created is removed again.
func (m *Manager) Setup(ctx context.Context) error {
	if err := checkTun(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.setupLocked(ctx); err != nil {
		return fmt.Errorf("setting up network %s: %w", m.cfg.Bridge, err)
	}
	return nil
}

// Close stops the DNS server and the pool refiller. The bridge, the taps and
// the nftables table stay: running VMs keep their network.
func (m *Manager) Close(ctx context.Context) error {
	m.stopRefiller()
	m.mu.Lock()
	m.setUp = false
	m.mu.Unlock()
	return m.dns.stop(ctx)
}

// Teardown stops DNS and removes banger's nftables table, every banger tap
// (pool and others, in use or not) and the bridge. It only removes things
// named by this Manager's config.
func (m *Manager) Teardown(ctx context.Context) error {
	errs := []error{m.Close(ctx)}
	errs = append(errs, deleteTable(m.cfg.Table))
	taps, err := ListBangerTaps()
	errs = append(errs, err)
	for _, name := range taps {
		errs = append(errs, deleteLink(name))
	}
	errs = append(errs, deleteBridge(m.cfg.Bridge))
	m.mu.Lock()
	m.free = nil
	m.inUse = map[string]bool{}
	m.mu.Unlock()
	m.gmu.Lock()
	m.guests = map[string]*guestState{}
	m.gmu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down network %s: %w", m.cfg.Bridge, err)
	}
	m.log.Info("network torn down", "bridge", m.cfg.Bridge)
	return nil
}
