package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/vmm"
)

// sparseFile writes a size-byte sparse file with data at offs and returns
// its full content's SHA-256.
func sparseFile(t *testing.T, path string, size int64, offs ...int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(o>>20) | 1}, 3*4096+7), o); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestCopyMemorySparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "ram"), filepath.Join(dir, "memory")
	const size = 64 << 20
	want := sparseFile(t, src, size, 0, 5<<20+123, size-4*4096)
	got, err := copyMemory(src, dst, size)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("copyMemory SHA-256 %s, want %s", got, want)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Error("the copy differs from the source")
	}
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o400 {
		t.Errorf("copy mode %v, %v; want 0400", st.Mode(), err)
	}
	var us unix.Stat_t
	_ = unix.Stat(dst, &us)
	if us.Blocks*512 > 4<<20 {
		t.Errorf("copy allocates %d bytes: not sparse", us.Blocks*512)
	}
	// Existing destination, wrong size, a link: refused.
	if _, err := copyMemory(src, dst, size); err == nil {
		t.Error("copyMemory over an existing file succeeded")
	}
	if _, err := copyMemory(src, filepath.Join(dir, "m2"), size+4096); err == nil || !strings.Contains(err.Error(), "truncated or replaced") {
		t.Errorf("copyMemory of a file of another size = %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := copyMemory(fifo, filepath.Join(dir, "m4"), size); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("copyMemory of a FIFO = %v", err)
	}
	link := filepath.Join(dir, "link")
	_ = os.Symlink(src, link)
	if _, err := copyMemory(link, filepath.Join(dir, "m3"), size); err == nil {
		t.Error("copyMemory followed a symlink")
	}
}

// fakeSnapshot writes a snapshot's files (a sparse 512 MiB memory, a
// small state) as Save would record them.
func fakeSnapshot(t *testing.T, e *Engine) vmm.Snapshot {
	t.Helper()
	dir := t.TempDir()
	snap := vmm.Snapshot{Engine: vmm.QEMU, Version: e.Info().Version, Accel: "tcg", VCPUs: 2, MemoryMiB: 512,
		State: filepath.Join(dir, "state"), Memory: filepath.Join(dir, "memory"), MemorySize: 512 << 20}
	if err := os.WriteFile(snap.State, []byte("QEVM state"), 0o400); err != nil {
		t.Fatal(err)
	}
	var err error
	snap.StateSize, snap.StateSHA256, err = hashFile(snap.State)
	if err != nil {
		t.Fatal(err)
	}
	snap.MemorySHA256 = sparseFile(t, snap.Memory, snap.MemorySize, 1<<20, 300<<20)
	return snap
}

func snapEngine(t *testing.T) *Engine {
	e := New(Config{Accel: "tcg", TSCkHz: 2199998})
	if !e.Info().Available {
		t.Skipf("qemu unavailable: %s", e.Info().Reason)
	}
	return e
}

// TestRestoreRefuses: every refusal is FailedPrecondition (or Invalid for
// a bad spec), before anything is started or written.
func TestRestoreRefuses(t *testing.T) {
	e := snapEngine(t)
	good := fakeSnapshot(t, e)
	tests := []struct {
		name string
		edit func(t *testing.T, s *vmm.Snapshot)
		want string
	}{
		{"other engine", func(_ *testing.T, s *vmm.Snapshot) { s.Engine = vmm.Firecracker }, `engine "firecracker"`},
		{"other version", func(_ *testing.T, s *vmm.Snapshot) { s.Version = "6.2.0" }, "qemu 6.2.0"},
		{"other accel", func(_ *testing.T, s *vmm.Snapshot) { s.Accel = "kvm" }, `accel "kvm"`},
		{"other vcpus", func(_ *testing.T, s *vmm.Snapshot) { s.VCPUs = 1 }, "1-vCPU"},
		{"other memory", func(_ *testing.T, s *vmm.Snapshot) { s.MemoryMiB = 256 }, "256 MiB"},
		{"no state", func(_ *testing.T, s *vmm.Snapshot) { s.State = "" }, "no state"},
		{"missing state", func(_ *testing.T, s *vmm.Snapshot) { _ = os.Remove(s.State) }, "no such file"},
		{"truncated state", func(_ *testing.T, s *vmm.Snapshot) { _ = os.Truncate(s.State, 3) }, "truncated or replaced"},
		{"changed state", func(t *testing.T, s *vmm.Snapshot) { flipByte(t, s.State, 0) }, "changed after it was saved"},
		{"state is a link", func(t *testing.T, s *vmm.Snapshot) {
			l := s.State + ".link"
			_ = os.Symlink(s.State, l)
			s.State = l
		}, "symbolic link"},
		{"truncated memory", func(_ *testing.T, s *vmm.Snapshot) { _ = os.Truncate(s.Memory, 1<<20) }, "truncated or replaced"},
		{"changed memory", func(t *testing.T, s *vmm.Snapshot) { flipByte(t, s.Memory, 300<<20) }, "changed after it was saved"},
		{"missing memory", func(_ *testing.T, s *vmm.Snapshot) { _ = os.Remove(s.Memory) }, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := copySnapshot(t, good)
			tt.edit(t, &snap)
			spec := baseSpec()
			spec.VMDir = t.TempDir()
			spec.APISocket, spec.AgentSocket = filepath.Join(spec.VMDir, "qmp.sock"), filepath.Join(spec.VMDir, "agent.sock")
			spec.SerialLog = filepath.Join(spec.VMDir, "serial.log")
			spec.MemoryFile = filepath.Join(spec.VMDir, "ram")
			_, err := e.Restore(t.Context(), spec, snap)
			if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want FailedPrecondition containing %q", err, tt.want)
			}
			if fix := api.AsError(err).FixLine(); fix == "" {
				t.Errorf("no fix in %v", err)
			}
			if ents, _ := os.ReadDir(spec.VMDir); len(ents) != 0 {
				t.Errorf("a refused Restore wrote %v", ents)
			}
		})
	}
}

// TestTemplateSealedAndCached: the template is the file's content, sealed
// (no write, no shared writable mapping, no resize) yet mappable private
// and writable (a child's RAM); it is loaded once, reloaded when the file
// is replaced, and closed by Forget.
func TestTemplateSealedAndCached(t *testing.T) {
	e := snapEngine(t)
	snap := fakeSnapshot(t, e)
	f1, err := e.templateFor(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	seals, err := unix.FcntlInt(f1.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals != templateSeals {
		t.Errorf("seals = %#x, %v; want %#x", seals, err, templateSeals)
	}
	if _, err := f1.WriteAt([]byte("x"), 0); err == nil {
		t.Error("write to the sealed template succeeded")
	}
	if _, err := unix.Mmap(int(f1.Fd()), 0, 4096, unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		t.Error("shared writable mapping of the sealed template succeeded")
	}
	if err := f1.Truncate(0); err == nil {
		t.Error("truncating the sealed template succeeded")
	}
	priv, err := unix.Mmap(int(f1.Fd()), 0, 512<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("private mapping (what a child does): %v", err)
	}
	want, _ := os.ReadFile(snap.Memory)
	if !bytes.Equal(priv, want) {
		t.Error("the template's content differs from the memory file")
	}
	priv[1<<20] ^= 0xff // copy-on-write: the template is unchanged
	_ = unix.Munmap(priv)
	check := make([]byte, 1)
	_, _ = f1.ReadAt(check, 1<<20)
	if check[0] != want[1<<20] {
		t.Error("a private write reached the template")
	}

	ino := func(f *os.File) uint64 {
		var st unix.Stat_t
		_ = unix.Fstat(int(f.Fd()), &st)
		return st.Ino
	}
	f2, err := e.templateFor(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if ino(f1) != ino(f2) {
		t.Error("a second restore loaded the template again")
	}
	// Replaced with other (valid) content: reloaded.
	tmp := snap.Memory + ".new"
	snap.MemorySHA256 = sparseFile(t, tmp, snap.MemorySize, 2<<20)
	if err := os.Rename(tmp, snap.Memory); err != nil {
		t.Fatal(err)
	}
	f3, err := e.templateFor(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if ino(f3) == ino(f1) {
		t.Error("a replaced memory file did not reload the template")
	}
	e.Forget(snap)
	e.mu.Lock()
	n := len(e.templates)
	e.mu.Unlock()
	if n != 0 {
		t.Errorf("%d templates cached after Forget", n)
	}
	if _, err := unix.FcntlInt(f3.Fd(), unix.F_GET_SEALS, 0); err != nil {
		t.Errorf("a child's dup died with Forget: %v", err)
	}
}

func TestRamKind(t *testing.T) {
	spec := baseSpec()
	got := []string{ramKind(spec, nil)}
	spec.MemoryFile = "/dev/shm/x"
	got = append(got, ramKind(spec, nil), ramKind(spec, &incoming{state: "s"}), ramKind(spec, &incoming{state: "s", template: "m"}))
	if want := []string{ramAnon, ramFile, ramFile, ramTemplate}; !slices.Equal(got, want) {
		t.Errorf("ramKind = %v, want %v", got, want)
	}
}
