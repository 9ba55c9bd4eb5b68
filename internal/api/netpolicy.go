package api

// Egress policy modes of a VM (NetPolicy.Mode).
const (
	// NetInternet: the internet through NAT, nothing of the host's world
	// (host, link-local, private and shared ranges, the host's attached
	// subnets, other VMs, multicast). The default.
	NetInternet = "internet"
	// NetNone: no egress at all; banger's DNS on the gateway still answers.
	NetNone = "none"
	// NetAllow: only the entries of NetPolicy.Allow (and the global
	// allow-list); DNS-over-TLS (853) is dropped.
	NetAllow = "allow"
)

// NetPolicy is a VM's egress policy. Allow entries (mode "allow" only) are
// a CIDR or IP ("203.0.113.0/24", "192.0.2.7"), optionally with ":port"
// ("192.0.2.7:443"), or a domain name ("example.com"; "*.example.com" for
// its subnames) whose addresses, as resolved through banger's DNS by that
// VM, become reachable for the answer's TTL.
type NetPolicy struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
}

// NetStatus is a VM's network policy as the host applies it now.
type NetStatus struct {
	Policy NetPolicy `json:"policy"`
	// Denied counts the packets the policy dropped since the VM started.
	Denied uint64 `json:"denied_packets"`
	// Applied is false when the VM is not running (the policy applies at
	// its next start).
	Applied bool `json:"applied"`
}

// SetNetPolicyRequest changes a VM's egress policy (live when it runs).
type SetNetPolicyRequest struct {
	Policy NetPolicy `json:"policy"`
}

// KnownHosts is a VM's SSH host keys as banger learned them through its
// agent and wrote them to Path (vm ssh checks them strictly).
type KnownHosts struct {
	Path string   `json:"path"`
	Keys []string `json:"keys"` // known_hosts lines
}
