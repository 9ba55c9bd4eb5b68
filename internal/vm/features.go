package vm

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/progress"
)

// features are the image features a VM waits for and lists URLs of: the
// shipped ones (tests swap in their own registry).
var features = feature.Default

// StageOpencode follows StageReady for VMs of opencode images (the stage
// of feature.Opencode).
var StageOpencode = feature.Opencode.Stage

// checkWait validates VMCreateRequest.Wait against the image's features:
// "" (every feature), the agent alone, or one feature the image has.
func checkWait(wait string, img api.Image) error {
	if wait == "" || wait == api.WaitAgent {
		return nil
	}
	if _, ok := features.Get(wait); ok {
		if slices.Contains(img.Features, wait) {
			return nil
		}
		return api.Invalid("--wait %s: image %s does not serve %s (its features: %v)", wait, img.Name, wait, img.Features).
			WithFix("leave --wait out, or use an image built --with " + wait)
	}
	return api.Invalid("--wait %q is not something a VM can wait for", wait).
		WithFix(fmt.Sprintf("use --wait %s (the guest agent only) or --wait %s (its server, on images that have it)",
			api.WaitAgent, features.Names("|")))
}

// imageFeatures returns the descriptors of the features v's image has.
func (m *Manager) imageFeatures(ctx context.Context, v api.VM) []feature.Descriptor {
	img, err := m.st.GetImage(ctx, v.ImageID)
	if err != nil {
		return nil
	}
	return features.Of(img.Features)
}

// waitFeatures runs one readiness stage (the descriptor's Stage, e.g.
// "opencode ready") for each feature of v's image: it waits until the
// feature's probe on the guest answers HTTP (any HTTP answer counts), the
// engine dies, or max(ready_timeout, the feature's MinWait) passes. A
// service's port can accept connections some seconds before its first
// answer under software emulation, and requests made meanwhile can stall,
// so a bare TCP accept is not enough. only, when not "", limits the wait
// to that feature.
func (m *Manager) waitFeatures(ctx context.Context, v api.VM, only string, alive func() bool, rep progress.Reporter) error {
	for _, d := range m.imageFeatures(ctx, v) {
		if only != "" && d.Name != only {
			continue
		}
		done := rep.Stage(d.Stage)
		wait := max(time.Duration(m.cfg.ReadyTimeout), d.MinWait)
		user, pass := probeAuth(v, d)
		err := waitHTTP(ctx, d.ProbeURL(v.Runtime.GuestIP), user, pass, wait, alive)
		if err == nil {
			rep.Detail(d.URL(v.Runtime.GuestIP))
		}
		done(err)
		if err != nil {
			return fmt.Errorf("%s in vm %s: %w", d.Name, v.Name, err)
		}
	}
	return nil
}

// waitHTTP GETs url (a fresh connection each try, 5 s each; with basic
// auth user:pass when user is not "") until any HTTP response comes back,
// alive reports false, or wait passes.
func waitHTTP(ctx context.Context, url, user, pass string, wait time.Duration, alive func() bool) error {
	deadline := time.Now().Add(wait)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
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

// urls lists the services a running VM offers: for each feature of its
// image, by DNS name and by address.
func (m *Manager) urls(ctx context.Context, v api.VM) []string {
	if v.Runtime.State != api.VMRunning {
		return nil
	}
	host := v.Runtime.DNSName
	if host == "" {
		host = v.Name + ".vm"
	}
	var out []string
	for _, d := range m.imageFeatures(ctx, v) {
		out = append(out, d.URL(host))
		if v.Runtime.GuestIP != "" {
			out = append(out, d.URL(v.Runtime.GuestIP))
		}
	}
	return out
}
