package api

import "time"

// VMLifetime is what the daemon does to a VM on its own, whoever is
// connected: delete (or stop) it when its TTL ends, stop it after a quiet
// spell, delete it when the `vm run` that owns it is gone. It is stored
// with the VM and survives daemon restarts (deadlines are absolute; idle
// time counts from the daemon's start after a restart).
type VMLifetime struct {
	// ExpiresAt is when the TTL ends; zero means no TTL.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// TTLAction is what happens then: TTLDelete (the default) or TTLStop.
	TTLAction string `json:"ttl_action,omitempty"`
	// IdleStop stops a running VM after this long without exec, terminal,
	// port-forward or agent activity, guest network traffic, or guest CPU
	// above the config's idle_cpu_percent. Zero means never.
	IdleStop time.Duration `json:"idle_stop_ns,omitempty"`
	// Run marks a VM owned by a `vm run`: the daemon deletes it once no
	// exec session is attached any more (its command ended, or the CLI that
	// ran it went away), so killing the CLI never leaks the VM.
	Run bool `json:"run,omitempty"`
}

// IsZero reports whether the daemon has nothing to do on its own.
func (l VMLifetime) IsZero() bool { return l == VMLifetime{} }

// TTL actions.
const (
	TTLDelete = "delete"
	TTLStop   = "stop"
)

// VMLifetimeRequest is PATCH /v1/vms/{name}/lifetime: nil fields are
// unchanged; a TTL counts from now, and 0 clears a TTL or an idle-stop.
type VMLifetimeRequest struct {
	TTLSeconds      *int64 `json:"ttl_seconds,omitempty"`
	TTLAction       string `json:"ttl_action,omitempty"`
	IdleStopSeconds *int64 `json:"idle_stop_seconds,omitempty"`
}
