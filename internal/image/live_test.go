package image_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/testimage"
)

// TestIntegrationImageLive builds (or reuses) the test image and boots it
// under QEMU TCG with user networking: sshd must answer with the baked key,
// the hostname, work disk and DNS must come from the command line, and the
// agent must answer on its virtio-serial channel.
func TestIntegrationImageLive(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("no qemu-system-x86_64: apt-get install qemu-system-x86 qemu-utils")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("no qemu-img: apt-get install qemu-utils")
	}
	img := testimage.Get(t)
	checkArtefacts(t, img)

	dir := t.TempDir()
	overlay := filepath.Join(dir, "root.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", img.Rootfs, "-F", "raw", overlay)
	work := filepath.Join(dir, "work.ext4")
	run(t, "cp", "--sparse=always", img.WorkSeed, work)
	port := freePort(t)
	serial := filepath.Join(dir, "serial.log")
	agentSock := filepath.Join(dir, "agent.sock")
	cmdline := "console=ttyS0 root=/dev/vda rw panic=-1 net.ifnames=0 " +
		"ip=10.0.2.15::10.0.2.2:255.255.255.0:tvm:eth0:off systemd.hostname=tvm banger.dns=10.0.2.3 " +
		"tsc_early_khz=" + hostTSCkHz(t) + " tsc=reliable"
	args := []string{"-M", "microvm", "-accel", "tcg,tb-size=128", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "file:" + serial,
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", cmdline, "-no-reboot",
		"-drive", "id=root,file=" + overlay + ",format=qcow2,if=none", "-device", "virtio-blk-device,drive=root",
		"-drive", "id=work,file=" + work + ",format=raw,if=none", "-device", "virtio-blk-device,drive=work",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22", port),
		"-device", "virtio-net-device,netdev=n0",
		"-device", "virtio-serial-device",
		"-chardev", "socket,path=" + agentSock + ",server=on,wait=off,id=ag",
		"-device", "virtserialport,chardev=ag,name=org.banger.agent"}
	cmd := exec.Command(qemu, args...)
	var qout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(serial)
			t.Logf("qemu output:\n%s\nserial console (tail):\n%s", qout.String(), tail(string(b), 60))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	client := dialSSH(ctx, t, port)
	t.Logf("boot → sshd answered with the baked key: %v", time.Since(start).Round(100*time.Millisecond))
	defer client.Close()

	checks := []struct{ cmd, want string }{
		{"cat /etc/hostname 2>/dev/null || hostname", "tvm"},
		{"hostname", "tvm"},
		{"findmnt -n -o SOURCE /root", "/dev/vdb"},
		{"cat /etc/resolv.conf", "nameserver 10.0.2.3"},
		{"ip -4 -o addr show eth0", "10.0.2.15/24"},
		{"stat -c %a /root/.ssh/authorized_keys", "600"},
		{"ls /etc/ssh/", "ssh_host_ed25519_key"},
		{"systemctl is-system-running --wait || true", ""},
	}
	for _, c := range checks {
		out := sshRun(t, client, c.cmd)
		if !strings.Contains(out, c.want) {
			t.Errorf("%q = %q, want it to contain %q", c.cmd, out, c.want)
		}
		if c.want == "" {
			t.Logf("%s → %s", c.cmd, strings.TrimSpace(out))
		}
	}
	if out := sshRun(t, client, "ls /etc/ssh/ | grep -c ssh_host_ || true"); strings.TrimSpace(out) != "2" {
		t.Errorf("host keys: %q, want only the ed25519 pair", out)
	}
	if out := sshRun(t, client, "systemctl --failed --no-legend --plain || true"); strings.TrimSpace(out) != "" {
		t.Errorf("failed units:\n%s", out)
	}

	actx, acancel := context.WithTimeout(ctx, 60*time.Second)
	defer acancel()
	ag := dialAgent(actx, t, agentSock)
	defer ag.Close()
	h, err := ag.Health(actx)
	if err != nil || !h.OK || h.Hostname != "tvm" {
		t.Fatalf("agent health = %+v, %v", h, err)
	}
	t.Logf("agent healthy %v after boot: %+v", time.Since(start).Round(100*time.Millisecond), h)
	var stdout, stderr bytes.Buffer
	code, err := ag.Exec(actx, api.ExecRequest{Argv: []string{"sh", "-c", "echo hello-$(hostname); echo err >&2; exit 3"}},
		nil, &stdout, &stderr)
	if err != nil || code != 3 || stdout.String() != "hello-tvm\n" || stderr.String() != "err\n" {
		t.Fatalf("agent exec: code=%d err=%v stdout=%q stderr=%q", code, err, stdout.String(), stderr.String())
	}
}

// checkArtefacts verifies the image's files and logs their sizes.
func checkArtefacts(t *testing.T, img api.Image) {
	t.Helper()
	for _, p := range []string{img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() == 0 {
			t.Fatalf("artefact %s: %v", p, err)
		}
	}
	f, err := elf.Open(img.Vmlinux)
	if err != nil {
		t.Fatalf("vmlinux: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("vmlinux is %v %v", f.Machine, f.Type)
	}
	f.Close()
	if img.VmlinuxSize < 10<<20 {
		t.Fatalf("vmlinux only %d bytes", img.VmlinuxSize)
	}
	if strings.Join(img.Engines, ",") != "qemu,firecracker" || !strings.Contains(strings.Join(img.Features, ","), "agent") {
		t.Fatalf("engines %v features %v", img.Engines, img.Features)
	}
	t.Logf("image %s kernel %s: vmlinuz %d KiB, vmlinux %d MiB, initrd %d MiB, rootfs %d MiB (%d MiB used on disk), work-seed %d MiB",
		img.Name, img.KernelVersion, img.KernelSize>>10, img.VmlinuxSize>>20, img.InitrdSize>>20,
		img.RootfsSize>>20, allocated(img.Rootfs)>>20, img.WorkSeedSize>>20)
}

func allocated(path string) int64 {
	out, err := exec.Command("du", "-B1", "--", path).Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	return n
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// hostTSCkHz reads the host TSC frequency from /proc/cpuinfo: microvm
// guests hang without tsc_early_khz when PIT calibration fails.
func hostTSCkHz(t *testing.T) string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return strconv.Itoa(int(mhz * 1000))
			}
		}
	}
	t.Fatal("no cpu MHz in /proc/cpuinfo")
	return ""
}

func dialSSH(ctx context.Context, t *testing.T, port int) *ssh.Client {
	t.Helper()
	keyPEM, err := os.ReadFile(testimage.KeyPath(testimage.CacheDir()))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var lastErr error
	for ctx.Err() == nil {
		c, err := ssh.Dial("tcp", addr, cfg)
		if err == nil {
			return c
		}
		lastErr = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("sshd did not accept the baked key within the deadline: %v", lastErr)
	return nil
}

func sshRun(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Errorf("ssh %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}

func dialAgent(ctx context.Context, t *testing.T, sock string) *agent.Client {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		c, err := agent.DialSerial(ctx, sock)
		if err == nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.Health(hctx)
			cancel()
			if err == nil {
				return c
			}
			c.Close()
		}
		lastErr = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("agent did not answer: %v", lastErr)
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
