package tun

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A root-owned tap (as netw makes them) cannot be attached to by an
// unprivileged uid; after SetOwner it can, and SetOwner(0, 0) takes it
// back. Open hands out the one queue: a second Open is EBUSY.
func TestIntegrationOwnerAndOpen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a tap in a network namespace): run as root")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "banger-tun-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", "bgtest0", "mode", "tap", "user", "0", "group", "0")
	path := "/run/netns/" + ns
	const uid = 2000000125

	if err := attachAs(t, ns, uid); err == nil {
		t.Fatal("uid attached to a root-owned tap")
	}
	if err := SetOwner("bgtest0", path, uid, uid); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("ip", "-n", ns, "-d", "link", "show", "bgtest0").Output(); !strings.Contains(string(out), "user 2000000125 group 2000000125") {
		t.Errorf("owner not set: %s", out)
	}
	if err := attachAs(t, ns, uid); err != nil {
		t.Errorf("uid cannot attach to its own tap: %v", err)
	}
	if err := SetOwner("bgtest0", path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := attachAs(t, ns, uid); err == nil {
		t.Error("uid still attaches after the tap went back to root")
	}
	f, err := Open("bgtest0", path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Open("bgtest0", path); !errors.Is(err, unix.EBUSY) {
		t.Errorf("second Open = %v, want EBUSY", err)
	}
	if _, err := Open("bgtest0", "/nonexistent/netns"); err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("Open in a missing netns = %v", err)
	}
}

// attachAs attaches to bgtest0 in ns as uid (TUNSETIFF from python3: a
// shell cannot) and returns the refusal, if any.
func attachAs(t *testing.T, ns string, uid int) error {
	t.Helper()
	const py = "/usr/bin/python3" // the system's: a uid may not reach a user's
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs /usr/bin/python3 to attach to a tap as another uid: apt-get install python3")
	}
	script := `import fcntl,struct,os
fd=os.open("/dev/net/tun",os.O_RDWR)
fcntl.ioctl(fd,0x400454ca,struct.pack("16sH",b"bgtest0",0x0002|0x1000))`
	// ip netns exec needs root; setpriv then drops to uid. /dev/net/tun is
	// handed in open (fd 3): its mode may refuse the uid, the tap's owner
	// check is what is tested.
	cmd := exec.Command("ip", "netns", "exec", ns, "setpriv", "--reuid="+itoa(uid), "--regid="+itoa(uid), "--clear-groups", py, "-c",
		strings.Replace(script, `os.open("/dev/net/tun",os.O_RDWR)`, `3`, 1))
	var tunf *os.File // opened in ns: a tun fd looks taps up where it was opened
	if err := inNetns("/run/netns/"+ns, func() (err error) {
		tunf, err = os.OpenFile(cloneDev, os.O_RDWR, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tunf.Close()
	cmd.ExtraFiles = []*os.File{tunf}
	if out, err := cmd.CombinedOutput(); err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
