package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/vmm"
)

// Request bodies of PUT /snapshot/load, from the API spec.
type (
	snapshotLoad struct {
		SnapshotPath     string            `json:"snapshot_path"`
		MemBackend       memBackend        `json:"mem_backend"`
		NetworkOverrides []networkOverride `json:"network_overrides,omitempty"`
		VsockOverride    *vsockOverride    `json:"vsock_override,omitempty"`
		ResumeVM         bool              `json:"resume_vm"`
	}
	memBackend struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	}
	networkOverride struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
	}
	vsockOverride struct {
		UDSPath string `json:"uds_path"`
	}
)

// damaged is the fix for a snapshot whose files are not what it says.
const damaged = "the snapshot is damaged: delete it and make a new one from a running VM"

// Restore starts a guest for spec from snap; see snapshot.go. Any refusal
// or failure leaves no process, socket, jail or drive link behind.
func (e *Engine) Restore(ctx context.Context, spec vmm.Spec, snap vmm.Snapshot) (vmm.Handles, error) {
	if err := validateRun(spec); err != nil {
		return vmm.Handles{}, err
	}
	drives, err := e.checkSnapshot(spec, snap)
	if err != nil {
		return vmm.Handles{}, err
	}
	spec.Vmlinux, spec.Initrd = "", "" // nothing boots
	l := e.planLaunch(spec)
	load := snapshotLoad{SnapshotPath: snap.State, MemBackend: memBackend{BackendType: "File", BackendPath: snap.Memory},
		NetworkOverrides: []networkOverride{{IfaceID: snap.Extra[xIface], HostDevName: spec.Tap}}, ResumeVM: true}
	var inJail func(jailPlan) error
	if l.jail != nil {
		for i, d := range spec.Disks { // planJail put the disks first
			l.jail.Links[i].Dst = filepath.Join(l.jail.Root, drives[d.ID])
			l.paths.Disks[i] = drives[d.ID]
		}
		load.SnapshotPath = jailSnapDir + "/" + stateName
		load.MemBackend.BackendPath = jailSnapDir + "/" + memName
		inJail = func(p jailPlan) error { return putSnapshotInJail(p, spec, snap) }
	} else {
		l.links = map[string]string{}
		for i, d := range spec.Disks {
			l.links[filepath.Join(spec.VMDir, drives[d.ID])] = d.Path
			l.paths.Disks[i] = drives[d.ID]
		}
	}
	l.recordShape(spec)
	if rec := snap.Extra[xVsock]; rec != l.paths.VsockUDS {
		load.VsockOverride = &vsockOverride{UDSPath: l.paths.VsockUDS}
	}
	h, err := e.run(ctx, spec, l, inJail, []apiRequest{{Method: http.MethodPut, Path: "/snapshot/load", Body: load}})
	var refused *APIError
	switch {
	case errors.As(err, &refused):
		// Firecracker read the snapshot and refused it (and exits).
		return vmm.Handles{}, api.FailedPrecondition("restoring vm %s from snapshot %s: %w", spec.Name, snap.State, err).WithFix(damaged)
	case err != nil:
		return vmm.Handles{}, fmt.Errorf("restoring vm %s from snapshot %s: %w", spec.Name, snap.State, err)
	}
	return h, nil
}

// checkSnapshot refuses a snapshot this engine cannot restore for spec,
// and returns its drives (disk id → path Firecracker opens).
func (e *Engine) checkSnapshot(spec vmm.Spec, snap vmm.Snapshot) (map[string]string, error) {
	refuse := func(fix, format string, args ...any) error {
		return api.FailedPrecondition("vm %s: snapshot %s: "+format, append([]any{spec.Name, snap.State}, args...)...).WithFix(fix)
	}
	version := e.Info().Version
	switch {
	case snap.Engine != vmm.Firecracker:
		return nil, refuse("restore it with the engine that made it (--engine "+snap.Engine+")",
			"made by the %s engine, not firecracker", snap.Engine)
	case snap.Version != version:
		return nil, refuse("make a new snapshot with this Firecracker, or install Firecracker "+snap.Version+" again",
			"made by Firecracker %s; this is Firecracker %s (snapshots do not cross versions)", snap.Version, version)
	case snap.Extra[xJailed] != strconv.FormatBool(e.jailed()):
		return nil, refuse("make a new snapshot with the current firecracker_unjailed setting",
			"made with jailed=%s, and the engine now runs jailed=%t", snap.Extra[xJailed], e.jailed())
	case snap.VCPUs != spec.VCPUs || snap.MemoryMiB != spec.MemoryMiB:
		return nil, refuse("give the VM the snapshot's size: --vcpus "+strconv.Itoa(snap.VCPUs)+" --memory "+strconv.Itoa(snap.MemoryMiB),
			"made of a guest with %d vCPUs and %d MiB; asked for %d vCPUs and %d MiB", snap.VCPUs, snap.MemoryMiB, spec.VCPUs, spec.MemoryMiB)
	case snap.Memory == "" || snap.Extra[xIface] == "":
		return nil, refuse(damaged, "no memory file or network interface recorded")
	}
	var drives map[string]string
	if err := json.Unmarshal([]byte(snap.Extra[xDrives]), &drives); err != nil {
		return nil, refuse(damaged, "its drive record %q: %v", snap.Extra[xDrives], err)
	}
	var want, have []string
	for id, p := range drives {
		if !drivePathOK(p, e.jailed()) {
			return nil, refuse(damaged, "drive %s at %q is not a path banger gives Firecracker", id, p)
		}
		want = append(want, id)
	}
	for _, d := range spec.Disks {
		have = append(have, d.ID)
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(want, have) {
		return nil, refuse("give the VM copies of exactly the snapshot's disks", "made with disks %v; the VM has %v", want, have)
	}
	if err := checkFile(snap.State, snap.StateSize, snap.StateSHA256, nil); err != nil {
		return nil, refuse(damaged, "state file: %v", err)
	}
	if err := checkFile(snap.Memory, snap.MemorySize, snap.MemorySHA256, e); err != nil {
		return nil, refuse(damaged, "memory file: %v", err)
	}
	return drives, nil
}

// drivePathOK: in a jail "/drive-<id>", unjailed "fc-drive-<n>" — what
// planLaunch gives Firecracker.
func drivePathOK(p string, jailed bool) bool {
	name := p
	if jailed {
		if !strings.HasPrefix(p, "/drive-") {
			return false
		}
		name = p[1:]
	} else if !strings.HasPrefix(p, "fc-drive-") {
		return false
	}
	return name != "" && !strings.ContainsAny(name, "/\x00") && name != "." && name != ".."
}

// checkFile checks path against size and sum. With e, a memory file: its
// hash is remembered per file identity and not computed again.
func checkFile(path string, size int64, sum string, e *Engine) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case fi.Size() != size:
		return fmt.Errorf("%s has %d bytes, the snapshot recorded %d (truncated or changed)", path, fi.Size(), size)
	}
	id := identify(fi)
	if e != nil {
		e.memMu.Lock()
		v, ok := e.memSums[path]
		e.memMu.Unlock()
		if ok && v.id == id && v.sum == sum {
			return nil
		}
	}
	got, _, err := hashReader(f, size)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if got != sum {
		return fmt.Errorf("%s has SHA-256 %s, the snapshot recorded %s (changed since it was made)", path, got, sum)
	}
	if e != nil {
		e.memMu.Lock()
		if e.memSums == nil {
			e.memSums = map[string]verified{}
		}
		e.memSums[path] = verified{id: id, sum: sum}
		e.memMu.Unlock()
	}
	return nil
}

// putSnapshotInJail makes the jail's /snapshot (root:gid 0750): the state
// file copied (root:gid 0440, checked again), the memory file linked — the
// same root-owned 0444 inode every child maps, which the jailed uid can
// read and not write — or, across filesystems, bind-mounted read-only.
func putSnapshotInJail(p jailPlan, spec vmm.Spec, snap vmm.Snapshot) error {
	dir := filepath.Join(p.Root, jailSnapDir)
	if err := os.Mkdir(dir, 0o750); err != nil {
		return api.Unavailable("vm %s: %w", spec.Name, err)
	}
	if err := os.Chown(dir, 0, spec.GID); err != nil {
		return api.Unavailable("vm %s: %w", spec.Name, err)
	}
	in, err := os.OpenFile(snap.State, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return api.Unavailable("vm %s: %w", spec.Name, err)
	}
	defer in.Close()
	state := filepath.Join(dir, stateName)
	_, sum, err := copySparse(in, snap.State, state, snap.StateSize, 0o440)
	if err == nil && sum != snap.StateSHA256 {
		err = fmt.Errorf("%s changed while copied into the jail", snap.State)
	}
	if err == nil {
		err = os.Chown(state, 0, spec.GID)
	}
	if err != nil {
		return api.FailedPrecondition("vm %s: snapshot state: %w", spec.Name, err).WithFix(damaged)
	}
	mem := filepath.Join(dir, memName)
	err = os.Link(snap.Memory, mem)
	if errors.Is(err, syscall.EXDEV) {
		err = bindReadOnly(snap.Memory, mem)
	}
	if err != nil {
		return api.Unavailable("vm %s: putting the snapshot's memory in the jail: %w", spec.Name, err)
	}
	return nil
}

// bindReadOnly bind-mounts src onto a new empty file dst, read-only.
func bindReadOnly(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", src, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		_ = unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("making the bind mount of %s read-only: %w", src, err)
	}
	return nil
}
