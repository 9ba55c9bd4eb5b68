package disktest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/disk"
)

// Bench times Create (Remove is untimed) of a 2 GiB sparse base holding
// about 300 MB of data in dir, the shape of a real rootfs image.
func Bench(b *testing.B, d disk.Driver, dir string) {
	base := filepath.Join(dir, "bench-base.img")
	MakeSparseBase(b, base, 2<<30, 300<<20)
	b.ResetTimer()
	for b.Loop() {
		dk, err := d.Create(b.Context(), base, filepath.Join(dir, "bench-disk"))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := d.Remove(b.Context(), dk); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// MakeSparseBase writes a sparse file of size bytes with data bytes of
// random content spread over it in 4 MiB runs, and fsyncs it.
func MakeSparseBase(t testing.TB, path string, size, data int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(size))
	const run = 4 << 20
	buf := make([]byte, run)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(buf)
	runs := data / run
	stride := size / runs
	for i := range runs {
		buf[0] = byte(i) // runs differ
		if _, err := f.WriteAt(buf, i*stride); err != nil {
			t.Fatal(err)
		}
	}
	must(t, f.Sync())
}
