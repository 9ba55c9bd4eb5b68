package hostcap

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// cmdTimeout bounds every external command a probe runs.
const cmdTimeout = 2 * time.Second

// Version is a dotted release number.
type Version struct{ Major, Minor, Patch int }

// String renders v as "1.8.0".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

var (
	fcVersionRe   = regexp.MustCompile(`(?i)\b(?:firecracker|jailer)\s+v?(\d+)\.(\d+)(?:\.(\d+))?`)
	qemuVersionRe = regexp.MustCompile(`(?i)\bversion\s+v?(\d+)\.(\d+)(?:\.(\d+))?`)
)

// ParseFirecrackerVersion parses `firecracker --version` (or jailer's)
// output: "Firecracker v1.8.0".
func ParseFirecrackerVersion(out string) (Version, error) {
	return parseVersion(fcVersionRe, out)
}

// ParseQEMUVersion parses `qemu-system-x86_64 --version` or `qemu-img
// --version` output: "QEMU emulator version 7.2.22 (Debian ...)".
func ParseQEMUVersion(out string) (Version, error) {
	return parseVersion(qemuVersionRe, out)
}

func parseVersion(re *regexp.Regexp, out string) (Version, error) {
	m := re.FindStringSubmatch(out)
	if m == nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return Version{}, fmt.Errorf("no version in %q", first)
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// sbinDirs are searched after PATH: root tools live there and a non-root
// PATH often lacks them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// lookTool finds an executable: an explicit path as is, else PATH, else the
// sbin directories.
func lookTool(name string) (string, error) {
	if strings.ContainsRune(name, '/') {
		return exec.LookPath(name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(sbinDirs, ", "))
}

// runCmd runs a short read-only command and returns its combined output.
func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		if first != "" {
			return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, first)
		}
		return out.String(), fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out.String(), nil
}

const fcFix = "install Firecracker ≥ 1.8 (https://github.com/firecracker-microvm/firecracker/releases) and put it on PATH, or set firecracker_bin in the config"

func probeFirecracker(ctx context.Context, bin string) Binary {
	if bin == "" {
		bin = "firecracker"
	}
	return probeFCBinary(ctx, "firecracker", bin, fcFix)
}

func probeJailer(ctx context.Context, bin string) Binary {
	return probeFCBinary(ctx, "jailer", bin,
		"install the jailer from the same Firecracker ≥ 1.8 release, or clear jailer_bin in the config")
}

func probeFCBinary(ctx context.Context, what, bin, fix string) Binary {
	path, err := lookTool(bin)
	if err != nil {
		return Binary{Cap: Cap{Detail: notFound(what, bin), Fix: fix}}
	}
	b := Binary{Path: path}
	out, err := runCmd(ctx, path, "--version")
	if err != nil {
		b.Detail, b.Fix = fmt.Sprintf("%s at %s does not run: %v", what, path, err), fix
		return b
	}
	v, err := ParseFirecrackerVersion(out)
	if err != nil {
		b.Detail, b.Fix = fmt.Sprintf("%s at %s: %v", what, path, err), fix
		return b
	}
	b.Version = v.String()
	if v.Less(MinFirecracker) {
		b.Detail = fmt.Sprintf("%s %s at %s is older than %s (needed for ACPI guests)", what, v, path, MinFirecracker)
		b.Fix = fix
		return b
	}
	b.OK = true
	b.Detail = fmt.Sprintf("%s %s at %s", what, v, path)
	return b
}

const qemuFix = "apt-get install qemu-system-x86 qemu-utils"

func probeQEMU(ctx context.Context, bin string) Binary {
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	return probeQEMUBinary(ctx, bin)
}

func probeQEMUImg(ctx context.Context) Binary { return probeQEMUBinary(ctx, "qemu-img") }

func probeQEMUBinary(ctx context.Context, bin string) Binary {
	path, err := lookTool(bin)
	if err != nil {
		return Binary{Cap: Cap{Detail: notFound(filepath.Base(bin), bin), Fix: qemuFix}}
	}
	b := Binary{Path: path}
	out, err := runCmd(ctx, path, "--version")
	if err != nil {
		b.Detail, b.Fix = fmt.Sprintf("%s does not run: %v", path, err), qemuFix
		return b
	}
	v, err := ParseQEMUVersion(out)
	if err != nil {
		b.Detail, b.Fix = fmt.Sprintf("%s: %v", path, err), qemuFix
		return b
	}
	b.OK, b.Version = true, v.String()
	b.Detail = fmt.Sprintf("%s %s", path, v)
	return b
}

// toolPackages lists the host programs banger runs and their Debian package.
var toolPackages = []Tool{
	{Name: "mkfs.ext4", Package: "e2fsprogs", Required: true},
	{Name: "e2fsck", Package: "e2fsprogs", Required: true},
	{Name: "resize2fs", Package: "e2fsprogs", Required: true},
	{Name: "bwrap", Package: "bubblewrap", Required: true}, // internal/sandbox: guest data, npm
	{Name: "debootstrap", Package: "debootstrap"},
	{Name: "mkfs.xfs", Package: "xfsprogs"},
	{Name: "ssh", Package: "openssh-client"},
}

func probeTools() []Tool {
	out := make([]Tool, 0, len(toolPackages))
	for _, t := range toolPackages {
		if p, err := lookTool(t.Name); err == nil {
			t.OK, t.Path, t.Detail = true, p, p
		} else {
			t.Detail = t.Name + " not found"
			t.Fix = "apt-get install " + t.Package
		}
		out = append(out, t)
	}
	return out
}

// notFound says where an executable was looked for.
func notFound(what, bin string) string {
	if strings.ContainsRune(bin, '/') {
		return fmt.Sprintf("%s not found at %s", what, bin)
	}
	if what != bin {
		return fmt.Sprintf("%s not found (looked for %s on PATH)", what, bin)
	}
	return what + " not found on PATH"
}

func itoa(i int) string { return strconv.Itoa(i) }
