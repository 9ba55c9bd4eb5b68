package dist

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the repository: the tests run in dist/.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  string
)

// binaries runs `make build` once per test binary into a temporary BIN, so
// the tests never touch the checkout's bin/ and build only once.
func binaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds banger's binaries (not in -short)")
	}
	needTool(t, "make", "apt-get install make")
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-dist-bin-")
		if err != nil {
			binErr = err.Error()
			return
		}
		binDir = dir
		if out, err := makeCmd(t, nil, "build", "BIN="+dir).CombinedOutput(); err != nil {
			binErr = "make build: " + err.Error() + "\n" + string(out)
		}
	})
	if binErr != "" {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// makeCmd is `make -C <repo> args...` with env added to the test's own.
// `-o build` in args skips the build target (binaries are already built).
func makeCmd(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", repoRoot(t)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// runMake runs make and fails the test, with its output, when it fails.
func runMake(t *testing.T, env []string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := makeCmd(t, env, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func needTool(t *testing.T, name, fix string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("no %s: %s", name, fix)
	}
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root (%s): run the tests as root (sudo make test-package)", why)
	}
}

func needAmd64(t *testing.T) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("the package is amd64 and this is %s", runtime.GOARCH)
	}
}

// aptPackages reads APT_PACKAGES (the runtime packages) from the Makefile.
func aptPackages(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var value strings.Builder
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if !in {
			name, rest, ok := strings.Cut(line, ":=")
			if !ok || strings.TrimSpace(name) != "APT_PACKAGES" {
				continue
			}
			in, line = true, rest
		}
		more := strings.HasSuffix(strings.TrimSpace(line), `\`)
		value.WriteString(strings.TrimSuffix(strings.TrimSpace(line), `\`) + " ")
		if !more {
			break
		}
	}
	pkgs := strings.Fields(value.String())
	if len(pkgs) == 0 {
		t.Fatal("no APT_PACKAGES in the Makefile")
	}
	return pkgs
}
