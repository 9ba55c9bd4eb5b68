package netw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"banger/internal/api"
	"banger/internal/netw/tun"
	"banger/internal/revert"
)

// Tap name prefixes. Linux interface names are at most 15 bytes, so a
// non-pool tap gets 4 random hex digits.
const (
	poolPrefix  = "tap-pool-"
	extraPrefix = "banger-tap-"
)

func poolName(i int) string { return poolPrefix + strconv.Itoa(i) }

// isPoolTap reports whether name is one of this Manager's pool taps.
func (m *Manager) isPoolTap(name string) bool {
	s, ok := strings.CutPrefix(name, poolPrefix)
	if !ok {
		return false
	}
	i, err := strconv.Atoi(s)
	return err == nil && i >= 0 && i < m.cfg.TapPoolSize && poolName(i) == name
}

func isBangerTapName(name string) bool {
	return strings.HasPrefix(name, poolPrefix) || strings.HasPrefix(name, extraPrefix)
}

// ListBangerTaps lists the interfaces in the current network namespace named
// like banger taps (tap-pool-* or banger-tap-*), for leak audits.
func ListBangerTaps() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []string
	for _, l := range links {
		if n := l.Attrs().Name; isBangerTapName(n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// AcquireTap hands out a tap attached to the bridge: a free pool tap when
// there is one (poolHit), otherwise a freshly created banger-tap-<hex>.
func (m *Manager) AcquireTap(ctx context.Context) (name string, poolHit bool, err error) {
	m.mu.Lock()
	if !m.setUp {
		m.mu.Unlock()
		return "", false, api.FailedPrecondition("network %s is not set up", m.cfg.Bridge).
			WithFix("call Setup first (restart bangerd)")
	}
	for len(m.free) > 0 {
		name = m.free[0]
		m.free = m.free[1:]
		// a stat of sysfs is ~30x cheaper than a netlink round trip
		if _, err := os.Stat("/sys/class/net/" + name); err != nil {
			// vanished behind our back: let the refiller recreate it
			m.log.Warn("pool tap missing", "tap", name, "err", err)
			m.kickRefillLocked()
			continue
		}
		m.inUse[name] = true
		m.mu.Unlock()
		m.log.Debug("tap acquired", "tap", name, "pool_hit", true)
		return name, true, nil
	}
	m.mu.Unlock()

	name, err = m.createExtraTap()
	if err != nil {
		return "", false, err
	}
	m.mu.Lock()
	m.inUse[name] = true
	m.mu.Unlock()
	m.log.Info("tap pool exhausted, created tap", "tap", name, "pool", m.cfg.TapPoolSize)
	return name, false, nil
}

func (m *Manager) createExtraTap() (string, error) {
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return "", fmt.Errorf("looking up bridge %s: %w", m.cfg.Bridge, err)
	}
	var b [2]byte
	for range 8 {
		_, _ = rand.Read(b[:])
		name := extraPrefix + hex.EncodeToString(b[:])
		err := createTap(name, br)
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.EBUSY) {
			continue
		}
		return name, err
	}
	return "", api.Unavailable("no free banger-tap name after 8 tries").WithFix("delete leaked taps (banger doctor)")
}

// ReleaseTap returns a pool tap to the pool and deletes any other tap.
// Releasing a tap that is not in use is a no-op for pool taps.
func (m *Manager) ReleaseTap(ctx context.Context, name string) error {
	if !isBangerTapName(name) {
		return api.Invalid("%q is not a banger tap", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inUse, name)
	if !m.isPoolTap(name) {
		if err := deleteLink(name); err != nil {
			return fmt.Errorf("releasing tap %s: %w", name, err)
		}
		m.log.Debug("tap released", "tap", name, "deleted", true)
		return nil
	}
	if slices.Contains(m.free, name) {
		return nil
	}
	link, err := netlink.LinkByName(name)
	if err == nil {
		var br netlink.Link
		if br, err = netlink.LinkByName(m.cfg.Bridge); err == nil {
			err = attachPort(link, br)
		}
	}
	if err == nil {
		// An engine's uid may have been given it (a jailed Firecracker):
		// back to root before the next VM takes it.
		err = tun.SetOwner(name, "", 0, 0)
	}
	if err != nil {
		// gone or broken: drop it and let the refiller make a fresh one
		m.log.Warn("released pool tap unusable, recreating", "tap", name, "err", err)
		_ = deleteLink(name)
		m.kickRefillLocked()
		return nil
	}
	m.addFreeLocked(name)
	m.log.Debug("tap released", "tap", name, "deleted", false)
	return nil
}

// MarkInUse records that a VM (one that survived a daemon restart) holds
// name, so it is not handed out again. Call it before the first AcquireTap.
func (m *Manager) MarkInUse(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inUse[name] = true
	m.free = slices.DeleteFunc(m.free, func(s string) bool { return s == name })
}

// InUse lists the taps currently handed out or marked in use, sorted.
func (m *Manager) InUse() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.inUse {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// FreePoolTaps returns how many pool taps are ready to hand out.
func (m *Manager) FreePoolTaps() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.free)
}

// DeleteTap deletes a banger tap (a leak found at reconcile). A deleted pool
// tap is recreated by the refiller.
func (m *Manager) DeleteTap(ctx context.Context, name string) error {
	if !isBangerTapName(name) {
		return api.Invalid("%q is not a banger tap", name).WithFix("only tap-pool-* and banger-tap-* are banger's")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inUse, name)
	m.free = slices.DeleteFunc(m.free, func(s string) bool { return s == name })
	if err := deleteLink(name); err != nil {
		return err
	}
	if m.isPoolTap(name) {
		m.kickRefillLocked()
	}
	return nil
}

// TapStats returns the byte counters of a tap as the host sees them: rx is
// what the guest sent, tx what it received.
func (m *Manager) TapStats(name string) (rx, tx int64, err error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return 0, 0, api.NotFound("tap %s not found", name)
		}
		return 0, 0, fmt.Errorf("looking up tap %s: %w", name, err)
	}
	st := link.Attrs().Statistics
	if st == nil {
		return 0, 0, nil
	}
	return int64(st.RxBytes), int64(st.TxBytes), nil
}

// ensurePoolLocked makes sure tap-pool-0..N-1 exist and are attached, and
// rebuilds the free list from the taps not in use.
func (m *Manager) ensurePoolLocked(ctx context.Context, r *revert.Reverter) error {
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("looking up bridge %s: %w", m.cfg.Bridge, err)
	}
	m.free = m.free[:0]
	for i := range m.cfg.TapPoolSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := poolName(i)
		created, err := ensureTap(name, br)
		if err != nil {
			return err
		}
		if created {
			r.Add(func() { _ = deleteLink(name) })
		}
		if !m.inUse[name] {
			m.free = append(m.free, name)
		}
	}
	return nil
}

// ensureTap adopts an existing tap (re-attaching it) or creates it.
func ensureTap(name string, br netlink.Link) (created bool, err error) {
	link, err := netlink.LinkByName(name)
	if err == nil {
		if _, ok := link.(*netlink.Tuntap); !ok {
			return false, api.FailedPrecondition("interface %s exists but is a %s, not a tap", name, link.Type()).
				WithFix("remove it: ip link del " + name)
		}
		return false, attachPort(link, br)
	}
	if !isNotFound(err) {
		return false, fmt.Errorf("looking up tap %s: %w", name, err)
	}
	return true, createTap(name, br)
}

// createTap creates a persistent, single-queue TAP owned by root (an engine
// running as a VM's uid gets an fd, or the tap with tun.SetOwner) with
// IFF_TAP|IFF_NO_PI, which both QEMU (-netdev tap,ifname=) and Firecracker
// (host_dev_name, which adds IFF_VNET_HDR when it opens it) can attach to,
// and plugs it into the bridge. A partly set up tap is deleted again.
func createTap(name string, br netlink.Link) error {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI,
		Owner:     0,
		Group:     0,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) {
			return api.Unavailable("creating tap %s: %w", name, err).WithFix("modprobe tun")
		}
		return fmt.Errorf("creating tap %s: %w", name, err)
	}
	r := revert.New()
	defer r.Fail()
	r.Add(func() { _ = deleteLink(name) })
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up new tap %s: %w", name, err)
	}
	if err := attachPort(link, br); err != nil {
		return err
	}
	r.Success()
	return nil
}

// attachPort plugs link into the bridge as an isolated port (isolated ports
// cannot talk to each other at L2) and brings it up. Taps and the veth
// stand-ins of the tests go through this same code.
func attachPort(link, br netlink.Link) error {
	name := link.Attrs().Name
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attaching %s to bridge %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetIsolated(link, true); err != nil {
		return fmt.Errorf("isolating bridge port %s: %w", name, err)
	}
	if err := hardenIPv6(name); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

func (m *Manager) addFreeLocked(name string) {
	m.free = append(m.free, name)
	slices.SortFunc(m.free, func(a, b string) int { return poolIndex(a) - poolIndex(b) })
}

func poolIndex(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, poolPrefix))
	return i
}

// startRefiller starts the goroutine that recreates missing pool taps.
func (m *Manager) startRefiller() {
	if m.refill != nil {
		return
	}
	m.refill = make(chan struct{}, 1)
	m.stop = make(chan struct{})
	m.stopped = make(chan struct{})
	go m.refiller(m.refill, m.stop, m.stopped)
}

func (m *Manager) stopRefiller() {
	m.mu.Lock()
	stop, stopped := m.stop, m.stopped
	m.refill, m.stop, m.stopped = nil, nil, nil
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}
}

func (m *Manager) kickRefillLocked() {
	if m.refill == nil {
		return
	}
	select {
	case m.refill <- struct{}{}:
	default:
	}
}

func (m *Manager) refiller(refill <-chan struct{}, stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	for {
		select {
		case <-stop:
			return
		case <-refill:
		}
		m.mu.Lock()
		m.refillLocked()
		m.mu.Unlock()
	}
}

// refillLocked recreates pool taps that are missing and frees those that are
// neither in use nor free.
func (m *Manager) refillLocked() {
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		m.log.Warn("refilling tap pool", "err", err)
		return
	}
	for i := range m.cfg.TapPoolSize {
		name := poolName(i)
		if m.inUse[name] || slices.Contains(m.free, name) {
			continue
		}
		if _, err := ensureTap(name, br); err != nil {
			m.log.Warn("refilling tap pool", "tap", name, "err", err)
			continue
		}
		m.addFreeLocked(name)
		m.log.Debug("pool tap refilled", "tap", name)
	}
}
