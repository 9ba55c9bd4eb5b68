package api

import "time"

// ForwardRequest asks the daemon to forward a host port to a guest port
// (POST /v1/vms/{name}/forwards). HostAddr is 127.0.0.1 when empty;
// HostPort 0 picks a free port.
type ForwardRequest struct {
	HostAddr  string `json:"host_addr,omitempty"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
}

// Forward is a daemon-held port forward; URL is http://HOST:PORT.
type Forward struct {
	VM        string    `json:"vm"`
	HostAddr  string    `json:"host_addr"`
	HostPort  int       `json:"host_port"`
	GuestPort int       `json:"guest_port"`
	URL       string    `json:"url"`
	Created   time.Time `json:"created"`
}
