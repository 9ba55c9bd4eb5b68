package image_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/vmlinux"
	"banger/internal/progress"
	"banger/internal/store"
)

// tinyKernel returns a bzImage-shaped file holding a gzip'ed minimal x86-64
// ELF, with a kernel_version string in the setup header.
func tinyKernel(t *testing.T) []byte {
	t.Helper()
	const ehsize, phsize, body = 64, 56, 2000
	e := make([]byte, ehsize+phsize+body)
	copy(e, elf.ELFMAG)
	e[elf.EI_CLASS], e[elf.EI_DATA], e[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	le := binary.LittleEndian
	le.PutUint16(e[16:], uint16(elf.ET_EXEC))
	le.PutUint16(e[18:], uint16(elf.EM_X86_64))
	le.PutUint32(e[20:], 1)
	le.PutUint64(e[32:], ehsize)
	le.PutUint16(e[52:], ehsize)
	le.PutUint16(e[54:], phsize)
	le.PutUint16(e[56:], 1)
	le.PutUint16(e[58:], 64)
	le.PutUint32(e[ehsize:], uint32(elf.PT_LOAD))
	le.PutUint64(e[ehsize+32:], uint64(len(e)))
	le.PutUint64(e[ehsize+40:], uint64(len(e)))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(e)
	w.Close()
	b := make([]byte, 1024+gz.Len()+4)
	b[0x1f1] = 1
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020f)
	le.PutUint16(b[0x20e:], 0x300-0x200) // kernel_version pointer
	copy(b[0x300:], "6.1.0-test-amd64 (test@example) #1 SMP\x00")
	le.PutUint32(b[0x24c:], uint32(gz.Len()))
	copy(b[1024:], gz.Bytes())
	return b
}

// registerFiles writes a valid artefact set: a tiny bzImage, a gzip
// initrd and a 20 MiB ext4 rootfs whose /root holds a dotfile.
func registerFiles(t *testing.T) api.ImageRegisterRequest {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4: apt-get install e2fsprogs")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, tinyKernel(t), 0o644)
	initrd := filepath.Join(dir, "initrd.img")
	os.WriteFile(initrd, []byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0}, 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root", ".bashrc"), []byte("# hello\n"), 0o644)
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, rootfs, "20M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return api.ImageRegisterRequest{Name: "reg", Kernel: kernel, Initrd: initrd, Rootfs: rootfs}
}

func TestRegister(t *testing.T) {
	req := registerFiles(t)
	images := t.TempDir()
	rep := &progress.Recorder{}
	img, err := image.Register(context.Background(), images, req, rep)
	if err != nil {
		t.Fatal(err)
	}
	if img.Dir != filepath.Join(images, "reg") || img.Source != "register" || img.KernelVersion != "6.1.0-test-amd64" ||
		strings.Join(img.Engines, ",") != "qemu,firecracker" || len(img.Fingerprint) != 64 {
		t.Fatalf("metadata: %+v", img)
	}
	for _, p := range []string{img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed} {
		if !strings.HasPrefix(p, img.Dir+"/") {
			t.Fatalf("artefact %q outside %s", p, img.Dir)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("debugfs"); err == nil {
		out, _ := exec.Command("debugfs", "-R", "cat /.bashrc", img.WorkSeed).Output()
		if !strings.Contains(string(out), "# hello") {
			t.Fatalf("work-seed lacks the rootfs's /root/.bashrc: %q", out)
		}
	}
	t.Logf("stages %v", rep.Names())
	ents, _ := os.ReadDir(images)
	if len(ents) != 1 {
		t.Fatalf("images dir holds %v, want only reg", ents)
	}
}

func TestRegisterBadInput(t *testing.T) {
	good := registerFiles(t)
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, bytes.Repeat([]byte("not a kernel "), 2000), 0o644)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o644)
	cases := []struct {
		name   string
		modify func(r *api.ImageRegisterRequest)
		want   string
	}{
		{"non-kernel", func(r *api.ImageRegisterRequest) { r.Kernel = junk }, "--kernel " + junk + ": not a kernel"},
		{"missing kernel", func(r *api.ImageRegisterRequest) { r.Kernel = "/nonexistent" }, "--kernel /nonexistent"},
		{"non-ext4 rootfs", func(r *api.ImageRegisterRequest) { r.Rootfs = junk }, "--rootfs " + junk + ": not an ext4"},
		{"kernel as rootfs", func(r *api.ImageRegisterRequest) { r.Rootfs = good.Kernel }, "not an ext4"},
		{"empty initrd", func(r *api.ImageRegisterRequest) { r.Initrd = empty }, "--initrd " + empty + ": the file is empty"},
		{"junk initrd", func(r *api.ImageRegisterRequest) { r.Initrd = junk }, "not an initramfs"},
		{"junk work-seed", func(r *api.ImageRegisterRequest) { r.WorkSeed = junk }, "--work-seed"},
		{"junk vmlinux", func(r *api.ImageRegisterRequest) { r.Vmlinux = junk }, "--vmlinux"},
		{"bad name", func(r *api.ImageRegisterRequest) { r.Name = "-x" }, "name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			tc.modify(&req)
			images := t.TempDir()
			_, err := image.Register(context.Background(), images, req, nil)
			if !api.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want Invalid mentioning %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(images); len(ents) != 0 {
				t.Fatalf("left %v behind", ents)
			}
		})
	}
}

func TestServiceRegisterDelete(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	images := t.TempDir()
	svc := &image.Service{Store: st, ImagesDir: images}
	req := registerFiles(t)
	img, err := svc.Register(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, req, nil); !api.IsAlreadyExists(err) {
		t.Fatalf("second register: %v, want AlreadyExists", err)
	}
	child := api.Image{Name: "kid", Parent: img.Name, Source: "build", Managed: true, Dir: filepath.Join(images, "kid")}
	if err := st.CreateImage(ctx, &child); err != nil {
		t.Fatal(err)
	}
	vm := api.VM{Name: "user-vm", ImageID: img.ID, ImageName: img.Name, VCPUs: 1, MemoryMiB: 256}
	if err := st.CreateVM(ctx, &vm, store.Alloc{Subnet: netip.MustParsePrefix("10.123.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, img.Name, true); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "user-vm") {
		t.Fatalf("delete while a vm uses it: %v", err)
	}
	if err := st.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, img.Name, false); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "kid") {
		t.Fatalf("delete with a child: %v", err)
	}
	if err := svc.Delete(ctx, img.Name, true); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if _, err := st.GetImage(ctx, img.Name); !api.IsNotFound(err) {
		t.Fatalf("row still there: %v", err)
	}
	if _, err := os.Stat(img.Dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
	if err := svc.Delete(ctx, "nope", false); !api.IsNotFound(err) {
		t.Fatalf("delete missing: %v", err)
	}
}

// TestRegisterELFOnly: an uncompressed kernel is used as the vmlinux and
// the image is Firecracker-only (QEMU microvm needs the bzImage).
func TestRegisterELFOnly(t *testing.T) {
	req := registerFiles(t)
	bz, _ := os.ReadFile(req.Kernel)
	elfKernel, err := vmlinux.Extract(bz)
	if err != nil {
		t.Fatal(err)
	}
	req.Kernel = filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(req.Kernel, elfKernel, 0o644)
	img, err := image.Register(context.Background(), t.TempDir(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Kernel != "" || img.Vmlinux == "" || strings.Join(img.Engines, ",") != "firecracker" {
		t.Fatalf("ELF-only image: kernel=%q vmlinux=%q engines=%v", img.Kernel, img.Vmlinux, img.Engines)
	}
}
