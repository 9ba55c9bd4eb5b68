package vmlinux

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// tinyELF returns a minimal x86-64 ET_EXEC ELF with one PT_LOAD segment
// covering the whole file, padded with body.
func tinyELF(t testing.TB, machine elf.Machine, typ elf.Type, body int) []byte {
	t.Helper()
	const ehsize, phsize = 64, 56
	total := ehsize + phsize + body
	b := make([]byte, total)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	b[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	b[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le := binary.LittleEndian
	le.PutUint16(b[16:], uint16(typ))
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[24:], 0x1000000) // entry
	le.PutUint64(b[32:], ehsize)    // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1)  // phnum
	le.PutUint16(b[58:], 64) // shentsize
	ph := b[ehsize:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(ph[8:], 0)                    // offset
	le.PutUint64(ph[16:], 0x1000000)           // vaddr
	le.PutUint64(ph[24:], 0x1000000)           // paddr
	le.PutUint64(ph[32:], uint64(total))       // filesz
	le.PutUint64(ph[40:], uint64(total))       // memsz
	le.PutUint64(ph[48:], 0x200000)            // align
	for i := ehsize + phsize; i < total; i++ { // something compressible
		b[i] = byte(i % 7)
	}
	return b
}

// fakeBzImage wraps payload in a setup header the way the kernel build does:
// one setup sector, then the protected-mode part holding the payload at
// payloadOff, followed by the kernel's appended 4-byte size.
func fakeBzImage(payload []byte, payloadOff int, lengthField uint32) []byte {
	const setupSects = 1
	pm := (setupSects + 1) * 512
	b := make([]byte, pm+payloadOff+len(payload)+4)
	b[offSetupSects] = setupSects
	copy(b[offHeaderMagic:], headerMagic)
	binary.LittleEndian.PutUint16(b[offVersion:], 0x020f)
	binary.LittleEndian.PutUint32(b[offPayloadOffset:], uint32(payloadOff))
	binary.LittleEndian.PutUint32(b[offPayloadLength:], lengthField)
	copy(b[pm+payloadOff:], payload)
	binary.LittleEndian.PutUint32(b[len(b)-4:], 123456)
	return b
}

func compressGzip(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func compressXZ(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func compressZstd(t testing.TB, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(b, nil)
}

func compressLZMA(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func compressLZ4Legacy(t testing.TB, b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 0x184c2102)
	blk := make([]byte, lz4.CompressBlockBound(len(b)))
	n, err := lz4.CompressBlock(b, blk, nil)
	if err != nil || n == 0 {
		t.Fatalf("lz4 compress: n=%d err=%v", n, err)
	}
	out = binary.LittleEndian.AppendUint32(out, uint32(n))
	return append(out, blk[:n]...)
}

func TestExtractSynthetic(t *testing.T) {
	want := tinyELF(t, elf.EM_X86_64, elf.ET_EXEC, 4000)
	cases := []struct {
		name     string
		compress func(testing.TB, []byte) []byte
	}{
		{"gzip", compressGzip},
		{"xz", compressXZ},
		{"zstd", compressZstd},
		{"lzma", compressLZMA},
		{"lz4", compressLZ4Legacy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.compress(t, want)
			for _, variant := range []struct {
				name string
				img  []byte
			}{
				{"header", fakeBzImage(payload, 100, uint32(len(payload)))},
				{"scan-fallback", fakeBzImage(payload, 100, 0)}, // header fields unusable
			} {
				got, err := Extract(variant.img)
				if err != nil {
					t.Fatalf("%s: Extract: %v", variant.name, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: got %d bytes, want the %d-byte ELF", variant.name, len(got), len(want))
				}
			}
		})
	}
}

func TestExtractErrors(t *testing.T) {
	good := tinyELF(t, elf.EM_X86_64, elf.ET_EXEC, 4000)
	gz := compressGzip(t, good)
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"empty", nil, "too short for a setup header"},
		{"short", []byte("hello"), "too short"},
		{"zeros", make([]byte, 4096), "missing HdrS magic"},
		{"elf", append(good, make([]byte, 1024)...), "already an ELF"},
		{"random", bytes.Repeat([]byte("garbage!"), 512), "missing HdrS magic"},
		{"no payload", fakeBzImage([]byte("plain text, no compression"), 0, 26), "unknown payload compression"},
		{"truncated gzip", fakeBzImage(gz[:len(gz)/2], 0, uint32(len(gz)/2)), "gzip payload"},
		{"wrong arch", fakeBzImage(compressGzip(t, tinyELF(t, elf.EM_AARCH64, elf.ET_EXEC, 100)), 0, 0), "no compressed kernel"},
		{"not exec", fakeBzImage(compressGzip(t, tinyELF(t, elf.EM_X86_64, elf.ET_DYN, 100)), 8, 0), "no compressed kernel"},
		{"payload beyond end", fakeBzImage(gz, 0, 1<<30), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Extract(tc.input)
			if tc.want == "" { // recovered by the fallback scan
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Extract error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestCheckELFTruncated(t *testing.T) {
	b := tinyELF(t, elf.EM_X86_64, elf.ET_EXEC, 4000)
	if err := CheckELF(b[:len(b)-10]); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("CheckELF(truncated) = %v, want truncated", err)
	}
}

// TestExtractRealKernel runs on Debian's cloud kernel: from $BANGER_TEST_VMLINUZ
// when set, else fetched with apt-get download + dpkg-deb -x.
func TestExtractRealKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the real kernel")
	}
	path := os.Getenv("BANGER_TEST_VMLINUZ")
	if path == "" {
		path = fetchDebianKernel(t)
	}
	bz, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Extract(bz)
	if err != nil {
		t.Fatalf("Extract(%s): %v", path, err)
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		t.Fatalf("got %v %v %v", f.Class, f.Machine, f.Type)
	}
	if len(out) < 10<<20 {
		t.Fatalf("vmlinux is %d bytes, implausibly small", len(out))
	}
	t.Logf("%s (%d bytes) → vmlinux %d bytes", filepath.Base(path), len(bz), len(out))
}

func fetchDebianKernel(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: set BANGER_TEST_VMLINUZ=/path/to/vmlinuz to test a real kernel", tool)
		}
	}
	dir := t.TempDir()
	deps, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
	if err != nil {
		t.Skipf("apt-cache depends linux-image-cloud-amd64: %v (set BANGER_TEST_VMLINUZ)", err)
	}
	var pkg string
	for _, line := range strings.Split(string(deps), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-6") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		t.Fatalf("no kernel package in: %s", deps)
	}
	cmd := exec.Command("apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("downloaded %v", debs)
	}
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], filepath.Join(dir, "x")).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	kernels, _ := filepath.Glob(filepath.Join(dir, "x", "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("kernels in the package: %v", kernels)
	}
	return kernels[0]
}

func FuzzExtract(f *testing.F) {
	good := tinyELF(f, elf.EM_X86_64, elf.ET_EXEC, 200)
	f.Add([]byte{})
	f.Add(fakeBzImage(compressGzip(f, good), 0, 0))
	f.Add(fakeBzImage(compressLZ4Legacy(f, good), 16, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Extract(b)
		if err == nil {
			if cerr := CheckELF(out); cerr != nil {
				t.Fatalf("Extract returned an invalid ELF: %v", cerr)
			}
		}
	})
}
