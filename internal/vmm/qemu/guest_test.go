package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cacheDir keeps downloaded test artefacts between runs.
const cacheDir = "/var/cache/banger-test"

// testKernel returns a Debian cloud kernel (bzImage), downloading the
// package behind linux-image-cloud-amd64 with apt-get download (not
// installed) and caching its vmlinuz under cacheDir/kernel/<package>.
func testKernel(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
	if err != nil {
		t.Skipf("apt-cache depends linux-image-cloud-amd64: %v: %s (fix: a Debian host with apt, then apt-get update)", err, out)
	}
	m := regexp.MustCompile(`Depends: (linux-image-\S+-cloud-amd64)`).FindSubmatch(out)
	if m == nil {
		t.Skipf("no versioned kernel behind linux-image-cloud-amd64 in %q (fix: apt-get update)", out)
	}
	pkg := string(m[1])
	dst := filepath.Join(cacheDir, "kernel", pkg, "vmlinuz")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	root := aptExtract(t, pkg)
	vmlinuz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		t.Fatalf("package %s has %d vmlinuz files", pkg, len(vmlinuz))
	}
	// The drivers the test guest needs are modules in this kernel.
	for _, m := range testModules {
		found, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*", "kernel", m.dir, m.name+".ko"))
		if len(found) != 1 {
			t.Fatalf("package %s: module %s not found", pkg, m.name)
		}
		installCached(t, found[0], filepath.Join(filepath.Dir(dst), "modules", m.name+".ko"))
	}
	installCached(t, vmlinuz[0], dst) // last: its presence marks a complete cache
	return dst
}

// testModules are loaded in this order by the test guest's /init.
var testModules = []struct{ dir, name string }{
	{"drivers/virtio", "virtio_ring"}, {"drivers/virtio", "virtio"}, {"drivers/virtio", "virtio_mmio"},
	{"drivers/block", "virtio_blk"}, {"net/core", "failover"}, {"drivers/net", "net_failover"},
	{"drivers/net", "virtio_net"}, {"drivers/char", "virtio_console"},
	{"drivers/acpi", "button"}, {"drivers/input", "evdev"},
}

// testBusybox returns a static busybox from the busybox-static package
// (downloaded, not installed), cached under cacheDir/busybox.
func testBusybox(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(cacheDir, "busybox", "busybox")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	root := aptExtract(t, "busybox-static")
	installCached(t, filepath.Join(root, "bin", "busybox"), dst)
	return dst
}

// aptExtract downloads a .deb with apt-get download and unpacks it with
// dpkg-deb -x into a temporary directory.
func aptExtract(t *testing.T, pkg string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("apt-get", "download", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("apt-get download %s: %v: %s (fix: apt-get update; network access to the Debian mirror)", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	root := filepath.Join(dir, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v: %s", debs[0], err, out)
	}
	return root
}

func installCached(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// cpioEntry is one file of a newc initramfs.
type cpioEntry struct {
	name string
	mode uint32 // full st_mode: type and permissions
	data []byte // file contents or symlink target
}

// writeInitramfs writes an uncompressed newc cpio archive.
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	var buf bytes.Buffer
	write := func(ino int, e cpioEntry) {
		name := e.name + "\x00"
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, 0, 0, len(name), 0)
		buf.WriteString(name)
		pad(&buf)
		buf.Write(e.data)
		pad(&buf)
	}
	for i, e := range entries {
		write(i+1, e)
	}
	write(len(entries)+1, cpioEntry{name: "TRAILER!!!"})
	_, err := w.Write(buf.Bytes())
	return err
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// testInitramfs builds an initramfs whose /init is busybox sh running
// script, with the kernel's test modules in /lib/modules, and returns its
// path.
func testInitramfs(t *testing.T, kernel, script string) string {
	t.Helper()
	bb, err := os.ReadFile(testBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	const dir, file, link = 0o040755, 0o100755, 0o120777
	entries := []cpioEntry{
		{name: "bin", mode: dir}, {name: "dev", mode: dir}, {name: "proc", mode: dir}, {name: "sys", mode: dir},
		{name: "lib", mode: dir}, {name: "lib/modules", mode: dir},
		{name: "bin/busybox", mode: file, data: bb},
		{name: "bin/sh", mode: link, data: []byte("busybox")},
		{name: "init", mode: file, data: []byte("#!/bin/sh\n" + strings.TrimSpace(script) + "\n")},
	}
	for _, m := range testModules {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "modules", m.name+".ko"))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, cpioEntry{name: "lib/modules/" + m.name + ".ko", mode: 0o100644, data: b})
	}
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeInitramfs(f, entries); err != nil {
		t.Fatal(err)
	}
	return path
}
