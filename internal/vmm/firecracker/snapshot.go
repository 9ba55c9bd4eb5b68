package firecracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/revert"
	"banger/internal/vmm"
)

// Snapshots (vmm.Snapshotter), as Firecracker makes them
// (docs/snapshotting/snapshot-support.md):
//
//   - Pause and Resume are PATCH /vm {"state": "Paused"|"Resumed"}.
//   - Save sends PUT /snapshot/create (Full) to the paused guest. Under the
//     jailer Firecracker writes both files as the VM's uid into the jail's
//     /run; that uid is the guest's VMM, so it is not trusted with them
//     afterwards (it may keep them open and write on): Save copies them out
//     as root, beneath the jail root without following links (openat2),
//     each bounded (the state at Firecracker's own 10 MiB limit, the memory
//     at the guest's RAM + 64 MiB), sparse, hashing what it writes, into
//     new root-owned files in dir — the state 0400, the memory 0444 (a
//     child's uid must open it; dir's own permissions keep it from others)
//     — and removes the jail's copies. Unjailed (root) Firecracker writes
//     into dir itself.
//   - Restore checks the snapshot (engine, version, jailed or not, shape,
//     the disks it recorded, sizes and SHA-256 of both files: the memory
//     file hashed once per file identity — device, inode, size, mtime,
//     ctime — and remembered), starts a new Firecracker for the child with
//     no machine configuration and sends PUT /snapshot/load with the child's
//     tap as the override of the snapshot's interface (and its vsock
//     socket, unjailed) and resume_vm. Firecracker opens the memory file
//     read-only (File::open) and maps it MAP_PRIVATE, so in a jail it is a
//     hard link (or a read-only bind mount across filesystems) of the
//     root-owned 0444 file in a directory only the child's gid may walk; the
//     state file is copied (small), root:gid 0440. The drives are reopened
//     at the paths the state recorded: in a jail /drive-<id> (the child's
//     disks are linked there as at Start), unjailed fc-drive-<n> relative to
//     the VM dir (Firecracker's working directory; Start opens disks through
//     the same symlinks). A restored guest keeps its parent's MAC, IP, vsock
//     CID (the host side of hybrid vsock is the socket, so the CID does not
//     matter here) and clock; the orchestrator resets them.
//   - Forget drops the remembered memory hash; nothing else is held.

var _ vmm.Snapshotter = (*Engine)(nil)

// Keys of Handles.Extra and Snapshot.Extra.
const (
	xVCPUs  = "vcpus"
	xMemory = "memory_mib"
	xDrives = "drives"    // JSON {disk id: path Firecracker opens}
	xVsock  = "vsock_uds" // path Firecracker binds
	xLinks  = "links"     // JSON [host path]: unjailed drive symlinks
	xJailed = "jailed"    // "true" or "false" (Snapshot.Extra)
	xIface  = "iface"     // the network interface id (Snapshot.Extra)
)

// ifaceID is the guest network interface every VM gets.
const ifaceID = "eth0"

// Snapshot file names in Save's dir and in the jail.
const (
	stateName = "firecracker.vmstate"
	memName   = "firecracker.mem"
	// The jailed uid owns /run: Firecracker writes the snapshot there.
	jailStateOut = "/run/snapshot.vmstate"
	jailMemOut   = "/run/snapshot.mem"
	// A restore reads them from /snapshot (root:gid 0750).
	jailSnapDir = "/snapshot"
)

// Bounds on what Save copies out of a jail.
const (
	maxStateSize = 10 << 20 // Firecracker's own limit (snapshot/mod.rs)
	memSlack     = 64 << 20
)

// recordShape notes in Extra what a later Save needs: the shape, the paths
// Firecracker opens the drives and binds the vsock at, the drive links.
func (l *launch) recordShape(spec vmm.Spec) {
	l.extra[xVCPUs] = strconv.Itoa(spec.VCPUs)
	l.extra[xMemory] = strconv.Itoa(spec.MemoryMiB)
	drives := map[string]string{}
	for i, d := range spec.Disks {
		drives[d.ID] = l.paths.Disks[i]
	}
	b, _ := json.Marshal(drives)
	l.extra[xDrives] = string(b)
	l.extra[xVsock] = l.paths.VsockUDS
	if len(l.links) > 0 {
		var hosts []string
		for h := range l.links {
			hosts = append(hosts, h)
		}
		slices.Sort(hosts)
		b, _ := json.Marshal(hosts)
		l.extra[xLinks] = string(b)
	}
}

// makeLinks makes the unjailed drive symlinks (a stale link is replaced;
// anything else in the way is an error).
func makeLinks(links map[string]string) error {
	for host, target := range links {
		if fi, err := os.Lstat(host); err == nil {
			if fi.Mode()&os.ModeSymlink == 0 {
				return fmt.Errorf("%s exists and is not a drive link: remove it", host)
			}
			if err := os.Remove(host); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, host); err != nil {
			return fmt.Errorf("linking drive %s: %w", target, err)
		}
	}
	return nil
}

// removeLinks removes the drive symlinks Extra records.
func removeLinks(extra map[string]string) {
	var hosts []string
	_ = json.Unmarshal([]byte(extra[xLinks]), &hosts)
	for _, h := range hosts {
		if fi, err := os.Lstat(h); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			_ = os.Remove(h)
		}
	}
}

// vmState is PATCH /vm.
type vmState struct {
	State string `json:"state"`
}

// Pause stops the guest's vCPUs.
func (e *Engine) Pause(ctx context.Context, h vmm.Handles) error { return setVM(ctx, h, "Paused") }

// Resume continues a paused guest.
func (e *Engine) Resume(ctx context.Context, h vmm.Handles) error { return setVM(ctx, h, "Resumed") }

func setVM(ctx context.Context, h vmm.Handles, state string) error {
	err := newClient(h.APISocket).do(ctx, http.MethodPatch, "/vm", vmState{State: state}, nil)
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return api.FailedPrecondition("firecracker pid %d refused state %s: %w", h.PID, state, err)
	case err != nil:
		return api.Unavailable("setting firecracker pid %d to %s: %w", h.PID, state, err)
	}
	return nil
}

// snapshotCreate is PUT /snapshot/create.
type snapshotCreate struct {
	SnapshotType string `json:"snapshot_type"`
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// Save writes the paused guest's state and memory into dir; see the file
// comment.
func (e *Engine) Save(ctx context.Context, h vmm.Handles, dir string) (vmm.Snapshot, error) {
	vcpus, _ := strconv.Atoi(h.Extra[xVCPUs])
	mem, _ := strconv.Atoi(h.Extra[xMemory])
	if vcpus <= 0 || mem <= 0 || h.Extra[xDrives] == "" {
		return vmm.Snapshot{}, api.FailedPrecondition("firecracker pid %d was started without the record a snapshot needs", h.PID).
			WithFix("restart the VM (banger vm stop, then banger vm start) and snapshot it again")
	}
	st, err := e.State(ctx, h)
	if err != nil {
		return vmm.Snapshot{}, api.Unavailable("snapshot: %w", err)
	}
	if st != vmm.StatePaused {
		return vmm.Snapshot{}, api.FailedPrecondition("snapshot: the guest is %s, not paused", st).
			WithFix("pause the guest first (the engine's Pause)")
	}
	snap := vmm.Snapshot{Engine: vmm.Firecracker, Version: e.Info().Version, Accel: "kvm", VCPUs: vcpus, MemoryMiB: mem,
		State: filepath.Join(dir, stateName), Memory: filepath.Join(dir, memName),
		Extra: map[string]string{xDrives: h.Extra[xDrives], xVsock: h.Extra[xVsock], xIface: ifaceID,
			xJailed: strconv.FormatBool(h.Extra["jail_dir"] != "")}} // how this VM runs, whatever the config says now
	r := revert.New()
	defer r.Fail()
	r.Add(func() { _ = os.Remove(snap.State); _ = os.Remove(snap.Memory) })
	req := snapshotCreate{SnapshotType: "Full", SnapshotPath: snap.State, MemFilePath: snap.Memory}
	root := ""
	if jd := h.Extra["jail_dir"]; jd != "" {
		root = filepath.Join(jd, "root")
		req.SnapshotPath, req.MemFilePath = jailStateOut, jailMemOut
		for _, p := range []string{jailStateOut, jailMemOut} {
			if err := os.Remove(filepath.Join(root, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return vmm.Snapshot{}, api.Unavailable("snapshot: clearing %s in the jail: %w", p, err)
			}
		}
		defer func() {
			for _, p := range []string{jailStateOut, jailMemOut} {
				_ = os.Remove(filepath.Join(root, p))
			}
		}()
	}
	if err := newClient(h.APISocket).do(ctx, http.MethodPut, "/snapshot/create", req, nil); err != nil {
		return vmm.Snapshot{}, api.Unavailable("snapshot of firecracker pid %d: %w", h.PID, err)
	}
	maxMem := int64(mem)<<20 + memSlack
	if root != "" {
		if snap.StateSize, snap.StateSHA256, err = copyOut(root, jailStateOut, snap.State, maxStateSize, 0o400); err == nil {
			snap.MemorySize, snap.MemorySHA256, err = copyOut(root, jailMemOut, snap.Memory, maxMem, 0o444)
		}
	} else {
		if snap.StateSize, snap.StateSHA256, err = seal(snap.State, maxStateSize, 0o400); err == nil {
			snap.MemorySize, snap.MemorySHA256, err = seal(snap.Memory, maxMem, 0o444)
		}
	}
	if err != nil {
		return vmm.Snapshot{}, api.Unavailable("snapshot of firecracker pid %d: %w", h.PID, err)
	}
	e.remember(snap.Memory, snap.MemorySHA256)
	r.Success()
	return snap, nil
}

// copyOut copies rel, beneath root with no link followed, into a new file
// dst (root's, mode), sparse, at most max bytes; it returns the size and
// SHA-256 of what it wrote.
func copyOut(root, rel, dst string, max int64, mode os.FileMode) (int64, string, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, "", fmt.Errorf("opening jail %s: %w", root, err)
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, strings.TrimPrefix(rel, "/"), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return 0, "", fmt.Errorf("opening %s in the jail: %w", rel, err)
	}
	in := os.NewFile(uintptr(fd), rel)
	defer in.Close()
	return copySparse(in, rel, dst, max, mode)
}

// copySparse copies in (a regular file of at most max bytes) into a new
// file dst, skipping zero blocks, and seals it (root's, mode).
func copySparse(in *os.File, what, dst string, max int64, mode os.FileMode) (int64, string, error) {
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > max {
		return 0, "", fmt.Errorf("%s is not a regular file of at most %d bytes", what, max)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, "", err
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := io.ReadFull(in, buf)
		if k > 0 {
			if n += int64(k); n > max {
				return 0, "", fmt.Errorf("%s grew beyond %d bytes while copied", what, max)
			}
			h.Write(buf[:k])
			if isZero(buf[:k]) {
				_, err = out.Seek(int64(k), io.SeekCurrent)
			} else {
				_, err = out.Write(buf[:k])
			}
			if err != nil {
				return 0, "", fmt.Errorf("writing %s: %w", dst, err)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return 0, "", fmt.Errorf("reading %s: %w", what, err)
		}
	}
	if err := out.Truncate(n); err != nil {
		return 0, "", err
	}
	if err := out.Sync(); err != nil {
		return 0, "", err
	}
	if err := out.Chown(0, 0); err != nil {
		return 0, "", err
	}
	if err := out.Chmod(mode); err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// seal makes a file unjailed (root) Firecracker wrote root's with mode and
// hashes it.
func seal(path string, max int64, mode os.FileMode) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > max {
		return 0, "", fmt.Errorf("%s is not a regular file of at most %d bytes", path, max)
	}
	if err := f.Chown(0, 0); err != nil {
		return 0, "", err
	}
	if err := f.Chmod(mode); err != nil {
		return 0, "", err
	}
	sum, n, err := hashReader(f, max)
	return n, sum, err
}

func hashReader(r io.Reader, max int64) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, max+1))
	if err != nil {
		return "", 0, err
	}
	if n > max {
		return "", 0, fmt.Errorf("more than %d bytes", max)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// fileID identifies a file's content version: any write changes ctime.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func identify(fi os.FileInfo) fileID {
	st := fi.Sys().(*syscall.Stat_t)
	return fileID{dev: st.Dev, ino: st.Ino, size: fi.Size(),
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// verified is a memory file's hash at an identity.
type verified struct {
	id  fileID
	sum string
}

// remember records path's hash at its current identity.
func (e *Engine) remember(path, sum string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	e.memMu.Lock()
	defer e.memMu.Unlock()
	if e.memSums == nil {
		e.memSums = map[string]verified{}
	}
	e.memSums[path] = verified{id: identify(fi), sum: sum}
}

// Forget drops the remembered hash of snap's memory file: the engine holds
// nothing else for a snapshot (children map the file itself).
func (e *Engine) Forget(snap vmm.Snapshot) {
	e.memMu.Lock()
	defer e.memMu.Unlock()
	delete(e.memSums, snap.Memory)
}
