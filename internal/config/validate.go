package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// problem is one invalid value: the key and what is wrong with it.
type problem struct {
	key, msg string
}

func oneOf(key, v string, allowed ...string) []problem {
	if slices.Contains(allowed, v) {
		return nil
	}
	return []problem{{key, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))}}
}

func absPath(key, v string, optional bool) []problem {
	if v == "" && optional {
		return nil
	}
	if !filepath.IsAbs(v) {
		return []problem{{key, fmt.Sprintf("%q must be an absolute path", v)}}
	}
	return nil
}

func intRange(key string, v, lo, hi int) []problem {
	if v < lo || v > hi {
		return []problem{{key, fmt.Sprintf("%d is out of range %d..%d", v, lo, hi)}}
	}
	return nil
}

func atLeast[T ~int64](key string, v, lo T, show func(T) string) []problem {
	if v < lo {
		return []problem{{key, fmt.Sprintf("%s is below the minimum %s", show(v), show(lo))}}
	}
	return nil
}

// problems lists every invalid value, in key order.
func (c Config) problems() []problem {
	var p []problem
	p = append(p, absPath("state_dir", c.StateDir, false)...)
	p = append(p, absPath("socket_path", c.SocketPath, false)...)
	p = append(p, oneOf("engine", c.Engine, "auto", "firecracker", "qemu")...)
	if c.FirecrackerBin == "" {
		p = append(p, problem{"firecracker_bin", `must not be empty (default "firecracker", found on PATH)`})
	}
	p = append(p, absPath("jailer_bin", c.JailerBin, true)...)
	p = append(p, intRange("jailer_uid", c.JailerUID, 0, 1<<31-2)...)
	p = append(p, intRange("jailer_gid", c.JailerGID, 0, 1<<31-2)...)
	p = append(p, intRange("vm_uid_base", c.VMUIDBase, 1000, 1<<31-1-VMUIDRange)...)
	if c.QEMUBin == "" {
		p = append(p, problem{"qemu_bin", `must not be empty (default "qemu-system-x86_64", found on PATH)`})
	}
	p = append(p, oneOf("accel", c.Accel, "auto", "kvm", "tcg")...)
	p = append(p, absPath("ssh_key_path", c.SSHKeyPath, true)...)
	if n := c.BridgeName; n == "" || len(n) > 15 || strings.ContainsAny(n, "/: \t\n") || n == "." || n == ".." {
		p = append(p, problem{"bridge_name", fmt.Sprintf("%q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", n)})
	}
	p = append(p, c.subnetProblems()...)
	p = append(p, intRange("tap_pool_size", c.TapPoolSize, 0, 64)...)
	p = append(p, oneOf("network_policy", c.NetworkPolicy, "internet", "none")...)
	p = append(p, networkAllowProblems(c.NetworkAllow)...)
	for _, g := range c.GuestCACerts {
		if _, err := filepath.Match(g, ""); err != nil || !filepath.IsAbs(g) {
			p = append(p, problem{"guest_ca_certs", fmt.Sprintf("%q is not an absolute path or glob pattern", g)})
		}
	}
	p = append(p, intRange("max_forwards", c.MaxForwards, 0, 4096)...)
	p = append(p, intRange("idle_cpu_percent", c.IdleCPUPercent, 0, 10000)...)
	p = append(p, atLeast("stats_poll_interval", c.StatsPollInterval, Duration(100*time.Millisecond), Duration.String)...)
	p = append(p, intRange("vcpus", c.VCPUs, 1, 32)...)
	p = append(p, atLeast("memory", c.Memory, 128*MiB, Size.String)...)
	p = append(p, atLeast("disk_size", c.DiskSize, 64*MiB, Size.String)...)
	p = append(p, oneOf("disk_driver", c.DiskDriver, "auto", "dmsnap", "reflink", "qcow2", "copy")...)
	p = append(p, oneOf("storage_pool", c.StoragePool, "auto", "on", "off")...)
	p = append(p, atLeast("storage_pool_size", c.StoragePoolSize, 1*GiB, Size.String)...)
	p = append(p, atLeast("ready_timeout", c.ReadyTimeout, Duration(time.Second), Duration.String)...)
	if c.DefaultImage == "" {
		p = append(p, problem{"default_image", "must not be empty"})
	}
	p = append(p, c.webProblems()...)
	p = append(p, c.metricsProblems()...)
	p = append(p, absPath("agent_bin", c.AgentBin, true)...)
	p = append(p, oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error")...)
	p = append(p, atLeast("serial_log_max", c.SerialLogMax, 64*KiB, Size.String)...)
	p = append(p, atLeast("tcg_fork_cache", c.TCGForkCache, 8*MiB, Size.String)...)
	p = append(p, atLeast("engine_log_max", c.EngineLogMax, 64*KiB, Size.String)...)
	p = append(p, atLeast("build_log_max", c.BuildLogMax, 64*KiB, Size.String)...)
	p = append(p, intRange("sandbox_uid", c.SandboxUID, 1, 1<<31-2)...)
	p = append(p, absPath("sandbox_dir", c.SandboxDir, false)...)
	if m := c.DebianMirror; m != "" && !strings.HasPrefix(m, "http://") && !strings.HasPrefix(m, "https://") {
		p = append(p, problem{"debian_mirror", fmt.Sprintf("%q is not an http(s) URL (e.g. http://deb.debian.org/debian)", m)})
	}
	return p
}

func (c Config) subnetProblems() []problem {
	s := c.Subnet
	switch {
	case !s.IsValid():
		return []problem{{"subnet", "must be set to an IPv4 prefix, e.g. 10.203.0.0/24"}}
	case !s.Addr().Is4():
		return []problem{{"subnet", fmt.Sprintf("%s is not IPv4; use e.g. 10.203.0.0/24", s)}}
	case s.Bits() < 16 || s.Bits() > 29:
		return []problem{{"subnet", fmt.Sprintf("prefix length /%d is out of range /16../29", s.Bits())}}
	case s.Masked() != s:
		return []problem{{"subnet", fmt.Sprintf("%s has host bits set; use %s", s, s.Masked())}}
	}
	return nil
}

func (c Config) webProblems() []problem {
	return listenProblems("web_listen", c.WebListen, "127.0.0.1:7070", c.WebAllowRemote,
		"%q is not a loopback address; the web UI has no login, so set web_allow_remote = true only if you mean it")
}

// listenProblems checks an optional listen address (key = addr): off when
// empty, host:port (like example) when set, and a loopback address unless
// allowRemote; remote is the message (with %q for addr) when it is not.
func listenProblems(key, addr, example string, allowRemote bool, remote string) []problem {
	if addr == "" {
		return nil // listener off
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return []problem{{key, fmt.Sprintf("%q is not host:port, e.g. %s", addr, example)}}
	}
	if allowRemote {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if host == "localhost" || (err == nil && ip.IsLoopback()) {
		return nil
	}
	return []problem{{key, fmt.Sprintf(remote, addr)}}
}

// metricsProblems mirrors webProblems for metrics_listen, which has no token
// at all: a non-loopback address needs metrics_allow_remote.
func (c Config) metricsProblems() []problem {
	return listenProblems("metrics_listen", c.MetricsListen, "127.0.0.1:9470", c.MetricsAllowRemote,
		"%q is not a loopback address and metrics_listen has no token; "+
			"use a loopback address such as 127.0.0.1:9470 (scrape it through the web UI's /metrics with its token from elsewhere), "+
			"or set metrics_allow_remote = true if every machine that can reach it may read VM names and counters")
}

// networkAllowProblems checks the global allow-list: IPv4 CIDRs or
// addresses, each with an optional :port.
func networkAllowProblems(entries []string) []problem {
	var p []problem
	for _, e := range entries {
		addr, port, hasPort := strings.Cut(strings.TrimSpace(e), ":")
		ok := true
		if hasPort {
			n, err := strconv.Atoi(port)
			ok = err == nil && n >= 1 && n <= 65535
		}
		if pre, err := netip.ParsePrefix(addr); err == nil {
			ok = ok && pre.Addr().Is4()
		} else if a, err := netip.ParseAddr(addr); err == nil {
			ok = ok && a.Is4()
		} else {
			ok = false
		}
		if !ok {
			p = append(p, problem{"network_allow", fmt.Sprintf("%q is not an IPv4 CIDR or address with an optional :port (e.g. \"10.1.2.3:3128\")", e)})
		}
	}
	return p
}
