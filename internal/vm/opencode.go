package vm

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// Images with the opencode feature run `opencode serve` on OpencodePort; a
// VM of such an image is ready only once that port accepts connections.
const (
	FeatureOpencode = "opencode"
	OpencodePort    = 4096
	// StageOpencode follows StageReady for VMs of opencode images.
	StageOpencode = "opencode ready"
	// minOpencodeWait bounds the opencode readiness when ready_timeout is
	// shorter: its first start under software emulation takes a while.
	minOpencodeWait = 5 * time.Minute
)

// ImageHealer brings an image recorded by an older banger up to date (a
// work-seed, a vmlinux, a fingerprint, the engines list) before a VM is
// made from it. Heal returns img unchanged when nothing is missing; it does
// the work at most once per image (under a lock, recording the result in
// the store), reporting it as a stage on rep only when there is work.
// Implemented by image.Service.
type ImageHealer interface {
	Heal(ctx context.Context, img api.Image, rep progress.Reporter) (api.Image, error)
}

// SetImageHealer wires the image service in after both exist (the image
// service also needs the Manager, to boot builder VMs). Call it before
// serving requests.
func (m *Manager) SetImageHealer(h ImageHealer) { m.healer = h }

// healImage runs the healer when one is wired.
func (m *Manager) healImage(ctx context.Context, img api.Image, rep progress.Reporter) (api.Image, error) {
	if m.healer == nil {
		return img, nil
	}
	healed, err := m.healer.Heal(ctx, img, rep)
	if err != nil {
		return img, fmt.Errorf("bringing image %s up to date: %w", img.Name, err)
	}
	return healed, nil
}

// checkWait validates VMCreateRequest.Wait against the image's features.
func checkWait(wait string, img api.Image) error {
	switch {
	case wait == "" || wait == api.WaitAgent:
		return nil
	case wait == FeatureOpencode && slices.Contains(img.Features, FeatureOpencode):
		return nil
	case wait == FeatureOpencode:
		return api.Invalid("--wait %s: image %s does not serve %s (its features: %v)", wait, img.Name, wait, img.Features).
			WithFix("leave --wait out, or use an image built --with " + wait)
	}
	return api.Invalid("--wait %q is not something a VM can wait for", wait).
		WithFix(fmt.Sprintf("use --wait %s (the guest agent only) or --wait %s (its server, on images that have it)", api.WaitAgent, FeatureOpencode))
}

// hasOpencode reports whether v's image runs opencode.
func (m *Manager) hasOpencode(ctx context.Context, v api.VM) bool {
	img, err := m.st.GetImage(ctx, v.ImageID)
	return err == nil && slices.Contains(img.Features, FeatureOpencode)
}

// waitOpencode is the "opencode ready" stage of VMs whose image has the
// opencode feature: it waits until the server on the guest's port 4096
// answers HTTP (its health route; any HTTP answer counts), the engine dies,
// or max(ready_timeout, 5m) passes. The port accepts connections some
// seconds before the first answer under software emulation, and requests
// made meanwhile can stall, so a bare TCP accept is not enough.
func (m *Manager) waitOpencode(ctx context.Context, v api.VM, e vmm.Engine, h *Handles, rep progress.Reporter) error {
	if !m.hasOpencode(ctx, v) {
		return nil
	}
	done := rep.Stage(StageOpencode)
	wait := max(time.Duration(m.cfg.ReadyTimeout), minOpencodeWait)
	err := waitHTTP(ctx, opencodeURL(v.Runtime.GuestIP)+opencodeHealthPath, wait, func() bool { return e.Alive(h.VMM) })
	if err == nil {
		rep.Detail(opencodeURL(v.Runtime.GuestIP))
	}
	done(err)
	if err != nil {
		return fmt.Errorf("opencode in vm %s: %w", v.Name, err)
	}
	return nil
}

// opencodeHealthPath answers without setting up a project (which needs
// the internet).
const opencodeHealthPath = "/global/health"

// waitHTTP GETs url (a fresh connection each try, 5 s each) until any HTTP
// response comes back, alive reports false, or wait passes.
func waitHTTP(ctx context.Context, url string, wait time.Duration, alive func() bool) error {
	deadline := time.Now().Add(wait)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !alive() {
			return fmt.Errorf("the engine process exited before %s answered", url)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %s (last error: %v)", url, wait, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func opencodeURL(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + host + "]"
	}
	return "http://" + host + ":" + strconv.Itoa(OpencodePort)
}

// urls lists the services a running VM offers: for opencode images the
// server by DNS name and by address.
func (m *Manager) urls(ctx context.Context, v api.VM) []string {
	if v.Runtime.State != api.VMRunning || !m.hasOpencode(ctx, v) {
		return nil
	}
	host := v.Runtime.DNSName
	if host == "" {
		host = v.Name + ".vm"
	}
	out := []string{opencodeURL(host)}
	if v.Runtime.GuestIP != "" {
		out = append(out, opencodeURL(v.Runtime.GuestIP))
	}
	return out
}
