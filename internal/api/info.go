package api

// HostInfo is what the VM service runs VMs with on this host, chosen when
// the daemon starts (the config may say "auto"). GET /v1/status shows it.
type HostInfo struct {
	Engine     string `json:"engine"`      // default engine: qemu or firecracker
	Accel      string `json:"accel"`       // the default engine's acceleration: kvm, pvm, tcg
	DiskDriver string `json:"disk_driver"` // system disk driver: dmsnap, reflink, qcow2, copy
}
