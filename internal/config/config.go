// Package config loads banger's TOML configuration (/etc/banger/config.toml
// by default) and supplies the defaults for every key. The shipped
// config/config.sample.toml documents every key; tests keep it and Default
// in step.
//
// What it trusts: the config file is the host administrator's; it is still
// parsed strictly (unknown keys, bad units and out-of-range values are
// errors). Its keys include the caps on guest output (serial_log_max,
// engine_log_max, build_log_max).
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"time"
)

// DefaultPath is where the daemon and CLI look for the config file when
// neither --config nor $BANGER_CONFIG names one.
const DefaultPath = "/etc/banger/config.toml"

// EnvVar names the environment variable that overrides DefaultPath.
const EnvVar = "BANGER_CONFIG"

// resolvePath returns the config file to use and whether it was named:
// flag if set, else env ($BANGER_CONFIG) if set, else def (DefaultPath, not
// named). It is unexported on purpose: callers pass the raw --config value to
// Load, so that the default path is never mistaken for a named one.
func resolvePath(flag, env, def string) (path string, named bool) {
	if flag != "" {
		return flag, true
	}
	if env != "" {
		return env, true
	}
	return def, false
}

// Config is banger's configuration. Zero-valued optional fields (JailerBin,
// SSHKeyPath, AgentBin) mean "let banger choose"; see each key in
// config/config.sample.toml.
type Config struct {
	// Path is the file this came from; "" means defaults only.
	Path string `toml:"-"`

	StateDir       string `toml:"state_dir"`
	SocketPath     string `toml:"socket_path"`
	Engine         string `toml:"engine"`
	FirecrackerBin string `toml:"firecracker_bin"`
	JailerBin      string `toml:"jailer_bin"`
	JailerUID      int    `toml:"jailer_uid"` // ignored: each VM has its own uid (VMUIDBase)
	JailerGID      int    `toml:"jailer_gid"` // ignored, as JailerUID
	// FirecrackerUnjailed runs Firecracker without the jailer, as root,
	// when no jailer is found; off, Firecracker needs the jailer.
	FirecrackerUnjailed bool `toml:"firecracker_unjailed"`
	// VMUIDBase is the first of VMUIDRange ids the engines run as: each
	// VM's QEMU or jailed Firecracker runs as uid = gid = VMUIDBase + its
	// vsock CID. No passwd entry is needed; the range must not hold one.
	VMUIDBase   int          `toml:"vm_uid_base"`
	QEMUBin     string       `toml:"qemu_bin"`
	Accel       string       `toml:"accel"`
	SSHKeyPath  string       `toml:"ssh_key_path"`
	BridgeName  string       `toml:"bridge_name"`
	Subnet      netip.Prefix `toml:"subnet"`
	TapPoolSize int          `toml:"tap_pool_size"`
	// MaxForwards bounds the daemon-held port forwards (vm port-forward
	// --detach) over all VMs.
	MaxForwards   int      `toml:"max_forwards"`
	NetworkPolicy string   `toml:"network_policy"`
	NetworkAllow  []string `toml:"network_allow"`
	GuestCACerts  []string `toml:"guest_ca_certs"`
	// IdleCPUPercent is the guest CPU (percent of one host core, as vm stats
	// shows it) under which a VM with --idle-stop counts as idle.
	IdleCPUPercent    int      `toml:"idle_cpu_percent"`
	StatsPollInterval Duration `toml:"stats_poll_interval"`
	VCPUs             int      `toml:"vcpus"`
	Memory            Size     `toml:"memory"`
	DiskSize          Size     `toml:"disk_size"`
	DiskDriver        string   `toml:"disk_driver"`
	StoragePool       string   `toml:"storage_pool"`
	StoragePoolSize   Size     `toml:"storage_pool_size"`
	ReadyTimeout      Duration `toml:"ready_timeout"`
	DefaultImage      string   `toml:"default_image"`
	WebListen         string   `toml:"web_listen"`
	WebAllowRemote    bool     `toml:"web_allow_remote"`
	AgentBin          string   `toml:"agent_bin"`
	LogLevel          string   `toml:"log_level"`

	// TCGForkCache is the TCG translation cache of a guest restored from a
	// snapshot (QEMU under tcg only): QEMU fills it whole even in an idle
	// guest, so it is most of an idle fork's own memory; smaller saves
	// memory and costs speed (internal/vmm/qemu tbSize).
	TCGForkCache Size `toml:"tcg_fork_cache"`

	// Byte caps of the logs of guest output (internal/logcap); each keeps
	// one older copy, "<file>.1".
	SerialLogMax Size `toml:"serial_log_max"`
	EngineLogMax Size `toml:"engine_log_max"`
	BuildLogMax  Size `toml:"build_log_max"`

	// The metrics listener (internal/metrics): off unless set.
	MetricsListen      string `toml:"metrics_listen"`
	MetricsAllowRemote bool   `toml:"metrics_allow_remote"`

	// SandboxUID is the uid and gid host tools run as on guest-written
	// data and third-party code (internal/sandbox): no user or group of
	// the host may have it.
	SandboxUID int `toml:"sandbox_uid"`
	// SandboxDir holds the sandbox's scratch dirs (one subdir per state
	// dir); its parents must be searchable by others: not in state_dir.
	SandboxDir string `toml:"sandbox_dir"`
	// DebianMirror is the mirror image create debootstraps from; "" = the
	// host's apt's, else deb.debian.org. Requests cannot pick another.
	DebianMirror string `toml:"debian_mirror"`
}

// SandboxScratch is this daemon's scratch root: sandbox_dir/<12 hex of
// the sha256 of state_dir>, so daemons of other state dirs never clean it.
func (c Config) SandboxScratch() string {
	h := sha256.Sum256([]byte(c.StateDir))
	return filepath.Join(c.SandboxDir, hex.EncodeToString(h[:6]))
}

// Default returns the configuration used when no file exists. Path is "".
func Default() Config {
	return Config{
		StateDir:          "/var/lib/banger",
		SocketPath:        "/run/banger/bangerd.sock",
		Engine:            "auto",
		FirecrackerBin:    "firecracker",
		QEMUBin:           "qemu-system-x86_64",
		Accel:             "auto",
		BridgeName:        "banger0",
		Subnet:            netip.MustParsePrefix("10.203.0.0/24"),
		TapPoolSize:       4,
		NetworkPolicy:     "internet",
		GuestCACerts:      []string{"/usr/local/share/ca-certificates/*.crt"},
		MaxForwards:       32,
		IdleCPUPercent:    10,
		StatsPollInterval: Duration(5 * time.Second),
		VCPUs:             2,
		Memory:            1 * GiB,
		DiskSize:          8 * GiB,
		DiskDriver:        "auto",
		StoragePool:       "auto",
		StoragePoolSize:   64 * GiB,
		ReadyTimeout:      Duration(120 * time.Second),
		DefaultImage:      "default",
		WebListen:         "127.0.0.1:7070",
		LogLevel:          "info",
		SerialLogMax:      16 * MiB,
		TCGForkCache:      128 * MiB,
		EngineLogMax:      4 * MiB,
		BuildLogMax:       16 * MiB,
		SandboxUID:        2147000000,
		SandboxDir:        "/var/lib/banger-sandbox",
		VMUIDBase:         DefaultVMUIDBase,
	}
}

// DefaultVMUIDBase is vm_uid_base's default: far above login users and the
// usual subordinate-id ranges (100000 + 65536·n), below systemd's
// container range (0x7FFE0000).
const DefaultVMUIDBase = 1900000000

// VMUIDRange is how many ids from vm_uid_base VMs may use (one per vsock
// CID; CIDs are the lowest free from 3, so a host uses the first few).
const VMUIDRange = 65536

// VMUID is the uid and gid the engine of the VM with vsock CID cid runs as.
func (c Config) VMUID(cid uint32) int { return c.VMUIDBase + int(cid) }

// DBPath is the SQLite database: <state_dir>/banger.db.
func (c Config) DBPath() string { return filepath.Join(c.StateDir, "banger.db") }

// LogPath is the daemon log: <state_dir>/bangerd.log.
func (c Config) LogPath() string { return filepath.Join(c.StateDir, "bangerd.log") }

// LockPath is the daemon's single-instance lock: <state_dir>/bangerd.lock.
func (c Config) LockPath() string { return filepath.Join(c.StateDir, "bangerd.lock") }

// ImagesDir holds one directory per image: <state_dir>/images.
func (c Config) ImagesDir() string { return filepath.Join(c.StateDir, "images") }

// VMsDir holds one directory per VM: <state_dir>/vms.
func (c Config) VMsDir() string { return filepath.Join(c.StateDir, "vms") }

// KeyPath is the SSH private key banger logs into guests with: ssh_key_path,
// or the auto-managed <state_dir>/ssh/id_ed25519.
func (c Config) KeyPath() string {
	if c.SSHKeyPath != "" {
		return c.SSHKeyPath
	}
	return filepath.Join(c.StateDir, "ssh", "id_ed25519")
}

// Gateway is the bridge's address: the first host address of Subnet.
func (c Config) Gateway() netip.Addr {
	return c.Subnet.Masked().Addr().Next()
}
