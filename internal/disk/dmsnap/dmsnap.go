// Package dmsnap is the disk driver that makes a system disk a
// device-mapper snapshot: the image's rootfs on a read-only loop device is
// the origin, a sparse COW file on a second loop device takes the writes,
// and the engine opens /dev/mapper/banger-<name>. It is O(1), raw, works
// with every engine and every filesystem, but needs device-mapper
// (dm_snapshot) and holds kernel state that Attach re-creates after a
// host reboot.
//
// Files: the COW file at dst and dst+".base", which records the base path
// so that Attach can rebuild the stack. State (the Disk's opaque record):
// the loop devices and the dm target's name and device; nobody above this
// package reads it. Growing and snapshotting are not supported: the
// target's size is its base's, and its COW lives in the kernel's format.
// The package knows nothing of VMs.
package dmsnap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/disk/internal/blk"
	"banger/internal/revert"
)

var _ disk.Driver = (*Driver)(nil)

// MissingReason is the reason (with the fix) given when device-mapper is
// not usable on this host.
const MissingReason = "device-mapper missing: modprobe dm_snapshot; apt-get install dmsetup"

// Driver is the dm-snapshot driver.
type Driver struct {
	// CowSize is the size of each COW file in bytes; 0 means
	// CowSizeFor(the base's size): the guest can rewrite every block.
	CowSize int64
}

// New returns the driver with COW files large enough for a guest to
// rewrite its whole disk (CowSizeFor).
func New() *Driver { return &Driver{} }

// Info reports the driver's capabilities; it is available when
// /dev/mapper/control exists and dmsetup and losetup work.
func (d *Driver) Info() disk.Info {
	info := disk.Info{Name: disk.DMSnap, Instant: true, Format: "raw", KernelState: true}
	if ok, why := available(); !ok {
		info.Reason = why
		return info
	}
	info.Available = true
	info.Reason = "dm-snapshot over loop devices"
	return info
}

// available checks the kernel first (/proc/misc lists device-mapper) and
// only then runs dmsetup: dmsetup creates a /dev/mapper/control node even
// when the kernel has no device-mapper, so the node alone proves nothing.
func available() (bool, string) {
	if !kernelHasDM() {
		return false, MissingReason
	}
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		return false, MissingReason
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return false, "losetup missing: apt-get install mount"
	}
	if _, err := blk.Run(context.Background(), "dmsetup", "version"); err != nil {
		return false, MissingReason + " (" + err.Error() + ")"
	}
	return true, ""
}

// kernelHasDM reports whether the running kernel registered the
// device-mapper misc device.
func kernelHasDM() bool {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "device-mapper" {
			return true
		}
	}
	return false
}

// Create makes a COW file at dst and the snapshot device over base. On
// failure every loop device, dm target and file made so far is released.
func (d *Driver) Create(ctx context.Context, base, dst string) (disk.Disk, error) {
	if ok, why := available(); !ok {
		return disk.Disk{}, api.Unavailable("dmsnap disk driver unavailable: %s", why)
	}
	if err := disk.CheckPaths(base, dst); err != nil {
		return disk.Disk{}, err
	}
	absBase, err := filepath.Abs(base)
	if err != nil {
		return disk.Disk{}, fmt.Errorf("resolving base %s: %w", base, err)
	}
	if dst, err = filepath.Abs(dst); err != nil { // Name hashes this path
		return disk.Disk{}, fmt.Errorf("resolving disk path: %w", err)
	}
	st, err := os.Stat(absBase)
	if err != nil {
		return disk.Disk{}, fmt.Errorf("checking base %s: %w", base, err)
	}
	if st.Size() == 0 || st.Size()%512 != 0 {
		return disk.Disk{}, api.Invalid("base %s is %d bytes, not a positive multiple of 512", base, st.Size())
	}
	cowSize := d.CowSize
	if cowSize <= 0 {
		cowSize = CowSizeFor(st.Size())
	}
	r := revert.New()
	defer r.Fail()
	side := sidecar(dst)
	if err := writeNew(side, []byte(absBase+"\n"), 0); err != nil {
		return disk.Disk{}, err
	}
	r.Add(func() { os.Remove(side) })
	if err := writeNew(dst, nil, cowSize); err != nil {
		return disk.Disk{}, err
	}
	r.Add(func() { os.Remove(dst) })
	dk, err := setup(ctx, absBase, dst, st.Size())
	if err != nil {
		return disk.Disk{}, err
	}
	dk.Files = []string{dst, side}
	r.Success()
	return dk, nil
}

// setup attaches the two loop devices and creates the snapshot target,
// undoing its own steps on failure.
func setup(ctx context.Context, base, cow string, baseSize int64) (disk.Disk, error) {
	r := revert.New()
	defer r.Fail()
	bg := context.WithoutCancel(ctx)
	baseLoop, err := blk.LoopAttach(ctx, base, true)
	if err != nil {
		return disk.Disk{}, err
	}
	r.Add(func() { blk.LoopDetach(bg, baseLoop, base) })
	cowLoop, err := blk.LoopAttach(ctx, cow, false)
	if err != nil {
		return disk.Disk{}, err
	}
	r.Add(func() { blk.LoopDetach(bg, cowLoop, cow) })
	name := Name(cow)
	if _, err := blk.Run(ctx, "dmsetup", "create", name, "--verifyudev",
		"--table", Table(baseSize, baseLoop, cowLoop)); err != nil {
		return disk.Disk{}, fmt.Errorf("creating snapshot device %s: %w", name, err)
	}
	r.Add(func() { blk.Run(bg, "dmsetup", "remove", "--retry", name) })
	dev := "/dev/mapper/" + name
	if _, err := os.Stat(dev); err != nil {
		return disk.Disk{}, fmt.Errorf("snapshot device %s did not appear: %w", dev, err)
	}
	r.Success()
	return disk.Disk{
		Driver: disk.DMSnap, Path: dev, Format: "raw",
		State: state{Loops: []string{baseLoop, cowLoop}, DMName: name, DMDevice: dev}.encode(),
	}, nil
}

// state is a dmsnap Disk's State: what setup made. Its keys are those the
// Disk record had before State existed, so old records load the same.
type state struct {
	Loops    []string `json:"loops,omitempty"`
	DMName   string   `json:"dm_name,omitempty"`
	DMDevice string   `json:"dm_device,omitempty"`
}

func (s state) encode() json.RawMessage {
	b, _ := json.Marshal(s) // strings only: cannot fail
	return b
}

// stateOf decodes dk's State; a missing or unreadable one is empty (Detach
// then finds the target and loops from the COW file alone).
func stateOf(dk disk.Disk) state {
	var s state
	if len(dk.State) > 0 {
		json.Unmarshal(dk.State, &s)
	}
	return s
}

// Table is the dm table line of a persistent snapshot of baseLoop (size
// bytes) with its COW on cowLoop in 4 KiB chunks.
func Table(size int64, baseLoop, cowLoop string) string {
	return fmt.Sprintf("0 %d snapshot %s %s P 8", size/512, baseLoop, cowLoop)
}

// ChunkBytes is the snapshot's chunk size (Table's "P 8": 8 sectors).
const ChunkBytes = 8 * 512

// CowSizeFor is the size a persistent snapshot's COW device needs for the
// guest to rewrite every chunk of a base of baseBytes: a full COW fails
// writes with EIO and invalidates the snapshot, where a full filesystem
// would have said ENOSPC. The kernel's persistent exception store
// (drivers/md/dm-snap-persistent.c) lays the COW out as one header chunk,
// then areas of one metadata chunk followed by exceptions-per-area data
// chunks, where a metadata chunk holds chunk_size/16 exceptions (a 16-byte
// old/new chunk pair each): 256 for 4 KiB chunks. When an area fills, the
// next area's metadata chunk is zeroed at once, so N data chunks need
// 1 + N + (floor(N/256) + 1) chunks: the header, the data, and the metadata
// chunks of areas 0 to floor(N/256).
func CowSizeFor(baseBytes int64) int64 {
	const perArea = ChunkBytes / 16
	n := (baseBytes + ChunkBytes - 1) / ChunkBytes
	return (1 + n + n/perArea + 1) * ChunkBytes
}

// Name is the dm target name for the COW file at cow: "banger-" plus the
// name of its directory (the VM's) plus a hash of its path, so two disks
// never share a name and a name never exceeds device-mapper's limit.
func Name(cow string) string {
	abs, err := filepath.Abs(cow)
	if err != nil {
		abs = cow
	}
	sum := sha256.Sum256([]byte(abs))
	dir := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, filepath.Base(filepath.Dir(abs)))
	if len(dir) > 64 {
		dir = dir[:64]
	}
	return "banger-" + dir + "-" + hex.EncodeToString(sum[:4])
}

// Attach re-creates the loop devices and snapshot target of a disk whose
// files exist (after a host reboot). A disk whose target exists is
// returned as it is.
func (d *Driver) Attach(ctx context.Context, dk disk.Disk) (disk.Disk, error) {
	cow, side, err := files(dk)
	if err != nil {
		return disk.Disk{}, err
	}
	if dmExists(Name(cow)) {
		return dk, nil
	}
	if ok, why := available(); !ok {
		return disk.Disk{}, api.Unavailable("dmsnap disk driver unavailable: %s", why)
	}
	b, err := os.ReadFile(side)
	if err != nil {
		return disk.Disk{}, api.NotFound("disk %s lost its base record %s: %w", cow, side, err)
	}
	base := strings.TrimSpace(string(b))
	st, err := os.Stat(base)
	if err != nil {
		return disk.Disk{}, api.NotFound("base image %s of disk %s is gone: %w", base, cow, err)
	}
	if _, err := os.Stat(cow); err != nil {
		return disk.Disk{}, api.NotFound("cow file %s is gone: %w", cow, err)
	}
	nd, err := setup(ctx, base, cow, st.Size())
	if err != nil {
		return disk.Disk{}, err
	}
	nd.Files = dk.Files
	return nd, nil
}

// Attached reports whether the disk's snapshot target or any of its loop
// devices exist.
func (d *Driver) Attached(dk disk.Disk) bool {
	cow, side, err := files(dk)
	if err != nil {
		return false
	}
	return dmExists(Name(cow)) || len(ownLoops(dk, cow, side)) > 0
}

// Detach removes the snapshot target and the loop devices, keeping the
// files, and returns the disk with its State cleared. Parts already gone
// are fine.
func (d *Driver) Detach(ctx context.Context, dk disk.Disk) (disk.Disk, error) {
	var errs []error
	cow, side, ferr := files(dk)
	name := stateOf(dk).DMName
	if name == "" && ferr == nil {
		name = Name(cow)
	}
	if name != "" {
		slaves := dmSlaves(name)
		if dmExists(name) {
			if _, err := blk.Run(ctx, "dmsetup", "remove", "--retry", name); err != nil {
				errs = append(errs, fmt.Errorf("removing snapshot device %s: %w", name, err))
			}
		}
		if !dmExists(name) {
			// the target's own loops, whatever their names now
			for _, l := range slaves {
				if err := blk.LoopDetach(ctx, l, ""); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if ferr == nil {
		for l, back := range ownLoops(dk, cow, side) {
			if err := blk.LoopDetach(ctx, l, back); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return dk, err
	}
	dk.State = nil
	return dk, nil
}

// ownLoops maps the loop devices this disk still holds outside its target
// to their backing files: the recorded ones still backed by its COW file or
// base, and any backed by its COW file. A base loop not recorded is never
// taken: other disks over the same base have their own.
func ownLoops(dk disk.Disk, cow, side string) map[string]string {
	out := map[string]string{}
	base := ""
	if b, err := os.ReadFile(side); err == nil {
		base = strings.TrimSpace(string(b))
	}
	for _, l := range stateOf(dk).Loops {
		back, _ := blk.LoopBacking(l)
		if back != "" && (blk.SameFile(back, cow) || (base != "" && blk.SameFile(back, base))) {
			out[l] = back
		}
	}
	cowLoops, _ := blk.LoopsFor(cow)
	for _, l := range cowLoops {
		out[l] = cow
	}
	return out
}

// Remove detaches the disk and deletes its COW file and base record.
func (d *Driver) Remove(ctx context.Context, dk disk.Disk) error {
	if _, err := d.Detach(ctx, dk); err != nil {
		return err
	}
	return disk.RemoveFiles(dk)
}

// Export copies the snapshot's content to the raw sparse file dst,
// attaching the disk for the copy when it is not attached (and detaching
// it again).
func (d *Driver) Export(ctx context.Context, dk disk.Disk, dst string) (err error) {
	was := d.Attached(dk)
	at, err := d.Attach(ctx, dk)
	if err != nil {
		return fmt.Errorf("attaching dm-snapshot disk for export: %w", err)
	}
	if !was {
		defer func() {
			if _, derr := d.Detach(context.WithoutCancel(ctx), at); derr != nil && err == nil {
				os.Remove(dst)
				err = fmt.Errorf("detaching dm-snapshot disk after export: %w", derr)
			}
		}()
	}
	if err := disk.SparseCopy(at.Path, dst); err != nil {
		return fmt.Errorf("exporting dm-snapshot disk %s: %w", at.Path, err)
	}
	return nil
}

// Grow is not supported: the snapshot target is exactly as large as its
// base.
func (d *Driver) Grow(ctx context.Context, dk disk.Disk, size int64) error {
	return api.FailedPrecondition("a dm-snapshot disk cannot grow: the snapshot target is as large as its base").
		WithFix("build without a larger --size, or use the reflink or copy disk driver")
}

// Snapshot is not supported: a persistent snapshot's COW is bound to its
// target.
func (d *Driver) Snapshot(ctx context.Context, dk disk.Disk, dst string) (disk.Disk, error) {
	return disk.Disk{}, api.FailedPrecondition("a dm-snapshot disk cannot be snapshotted").
		WithFix("set disk_driver to reflink, qcow2 or copy in the config")
}

// files finds the COW file and the base record among dk.Files.
func files(dk disk.Disk) (cow, side string, err error) {
	for _, f := range dk.Files {
		if strings.HasSuffix(f, ".base") {
			side = f
		} else if cow == "" {
			cow = f
		}
	}
	if cow == "" {
		return "", "", api.Invalid("dmsnap disk has no cow file recorded")
	}
	if side == "" {
		side = sidecar(cow)
	}
	return cow, side, nil
}

func sidecar(cow string) string { return cow + ".base" }

// dmExists reports whether a dm target called name exists (via sysfs).
func dmExists(name string) bool { return dmSysDir(name) != "" }

func dmSysDir(name string) string {
	ms, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, m := range ms {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Dir(filepath.Dir(m))
		}
	}
	return ""
}

// dmSlaves lists the loop devices under the dm target name.
func dmSlaves(name string) []string {
	dir := dmSysDir(name)
	if dir == "" {
		return nil
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "loop") {
			out = append(out, "/dev/"+e.Name())
		}
	}
	return out
}

// writeNew creates path exclusively (0600) with content, or sparse with
// size bytes when content is nil.
func writeNew(path string, content []byte, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if content != nil {
		_, err = f.Write(content)
	} else {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
