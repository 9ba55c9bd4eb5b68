// Package feature describes the optional services an image can carry
// (`--with NAME` on image create and image build): each one is a
// Descriptor holding everything banger knows about it — the script that
// installs it, the file that shows it is installed, how a VM waits for it
// and the URLs it serves. Image builders run the script, the VM
// orchestrator waits and lists URLs, the CLI prints them: all through the
// descriptor, so a new feature is a new Descriptor in All and nothing else.
//
// It owns the descriptors and the environment contract of their scripts
// (HostCAEnv). It must not know how images are built or VMs booted: it
// imports nothing of banger's.
package feature

import (
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Agent is the feature every banger image has: the guest agent. It is
// recorded in api.Image.Features but has no descriptor (nothing installs
// it on request, nothing waits for it here).
const Agent = "agent"

// Descriptor is one optional feature of an image.
type Descriptor struct {
	// Name is what --with, api.Image.Features and --wait call it.
	Name string
	// Script installs the feature; it runs as root, in the image build's
	// chroot (image create) or in the builder VM (image build). It reads
	// the host's CA bundle from $BANGER_HOST_CA when that is set.
	Script []byte
	// ScriptFix is the hint shown when the script fails.
	ScriptFix string
	// NPM, when set, are the npm packages the script installs globally.
	// Image create does not let the script run npm on the host: it runs
	// the script with BANGER_STEP=deps (Node.js from the Debian mirror),
	// installs NPM itself in a sandbox (no host privileges, the staging
	// tree read-only) into /usr/local, runs NPMCheck there, then the
	// script with BANGER_STEP=config. Image build runs the whole script in
	// its builder VM.
	NPM      []string
	NPMCheck []string
	// Marker is a file only an image with the feature installed has: it
	// tells a registered image's features.
	Marker string
	// Port and Path are the readiness probe: the feature is ready once
	// http://<guest>:Port+Path answers with any HTTP response.
	Port int
	Path string
	// Stage names the readiness stage a VM reports ("opencode ready").
	Stage string
	// MinWait bounds readiness when the VM's ready timeout is shorter.
	MinWait time.Duration
	// Auth is how the feature's server checks a per-VM credential; nil
	// when it has none.
	Auth *Auth
}

// Auth describes a feature server's per-VM credential: HTTP basic auth
// with User and a random password the daemon makes for each VM. At each
// boot the daemon writes PasswordEnv=<password> to EnvFile in the guest
// (root-only, on /run so images never carry it) and starts Unit, whose
// baked unit reads the file (EnvironmentFile=) and starts only once it
// exists (ConditionPathExists=).
type Auth struct {
	User        string
	PasswordEnv string
	EnvFile     string
	Unit        string
}

// URL is the feature's base URL on host (a DNS name or an address).
func (d Descriptor) URL(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + host + "]"
	}
	return "http://" + host + ":" + strconv.Itoa(d.Port)
}

// CredentialURL is the feature's base URL on host with the credential in
// it (http://user:password@host:port), for a browser or `opencode attach`.
func (d Descriptor) CredentialURL(host, password string) string {
	u, err := url.Parse(d.URL(host))
	if err != nil || d.Auth == nil || password == "" {
		return d.URL(host)
	}
	u.User = url.UserPassword(d.Auth.User, password)
	return u.String()
}

// ProbeURL is the readiness probe's URL on host.
func (d Descriptor) ProbeURL(host string) string { return d.URL(host) + d.Path }

// HostCAEnv names the variable a feature script finds the host's CA bundle
// in (for hosts behind a TLS-inspecting proxy); HostCABundle is the bundle
// on the host.
const (
	HostCAEnv    = "BANGER_HOST_CA"
	HostCABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// Registry is a set of descriptors, looked up by name.
type Registry struct{ list []Descriptor }

// NewRegistry makes a registry of ds (tests make their own).
func NewRegistry(ds ...Descriptor) *Registry { return &Registry{list: slices.Clone(ds)} }

// Get returns the descriptor named name.
func (r *Registry) Get(name string) (Descriptor, bool) {
	for _, d := range r.list {
		if d.Name == name {
			return d, true
		}
	}
	return Descriptor{}, false
}

// All returns every descriptor, in order.
func (r *Registry) All() []Descriptor { return slices.Clone(r.list) }

// Names lists the descriptors' names joined by sep ("opencode|…"), for
// hints.
func (r *Registry) Names(sep string) string {
	var n []string
	for _, d := range r.list {
		n = append(n, d.Name)
	}
	return strings.Join(n, sep)
}

// Of returns the descriptors among an image's features, in the registry's
// order; names without one (Agent) are skipped.
func (r *Registry) Of(features []string) []Descriptor {
	var out []Descriptor
	for _, d := range r.list {
		if slices.Contains(features, d.Name) {
			out = append(out, d)
		}
	}
	return out
}

// Default is every feature banger ships.
var Default = NewRegistry(Opencode)

// Get returns the shipped feature named name.
func Get(name string) (Descriptor, bool) { return Default.Get(name) }

// All returns every shipped feature.
func All() []Descriptor { return Default.All() }
