package live

import (
	"strings"
	"testing"

	"banger/internal/api"
)

// Bad names, sizes, images and flags given to the real CLI against a real
// daemon: every one is refused with an error that names the problem (and,
// for what the daemon validates, a "fix:" line), never a panic, and nothing
// is left half-made. No guest boots.
func TestIntegrationLiveBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("vm", "create", "--name", "keep", "--no-wait")
	long := "a" + strings.Repeat("b", 80)
	tests := []struct {
		args    []string
		want    string
		wantFix bool
	}{
		{[]string{"vm", "create", "--name", "Bad_Name"}, "must start with a lowercase letter", true},
		{[]string{"vm", "create", "--name", "bad_name"}, "only a-z, 0-9 and '-' are allowed", true},
		{[]string{"vm", "create", "--name", "trailing-"}, "must not end with '-'", true},
		{[]string{"vm", "create", "--name", long}, "the limit is", true},
		{[]string{"vm", "create", "--name", "keep"}, "already exists", true},
		{[]string{"vm", "create", "--name", "x1", "--image", "nope"}, `image "nope" not found`, true},
		{[]string{"vm", "create", "--name", "x2", "--memory", "lots"}, `invalid argument "lots" for "--memory" flag`, false},
		{[]string{"vm", "create", "--name", "x3", "--memory", "512"}, "less than 1MiB", true},
		{[]string{"vm", "create", "--name", "x4", "--memory", "64MiB"}, "memory 64 MiB is out of range", true},
		{[]string{"vm", "create", "--name", "x5", "--memory", "100TiB"}, "out of range", true},
		{[]string{"vm", "create", "--name", "x6", "--vcpus", "999"}, "vcpus 999 is out of range", true},
		{[]string{"vm", "create", "--name", "x7", "--vcpus", "-1"}, "--vcpus -1 must be positive", false},
		{[]string{"vm", "create", "--name", "x8", "--disk", "1MiB"}, "smaller than the image's work-seed", true},
		{[]string{"vm", "create", "--name", "x9", "--disk", "-5GiB"}, `"--disk" flag`, false},
		{[]string{"vm", "create", "--name", "x10", "--engine", "bogus"}, `engine "bogus" is not available`, true},
		{[]string{"vm", "create", "--bogus-flag"}, "unknown flag: --bogus-flag", false},
		{[]string{"vm", "create", "extra-arg"}, `unknown command "extra-arg"`, false},
		{[]string{"vm", "show", "nope"}, `"nope" not found`, false},
		{[]string{"vm", "delete", "nope"}, `"nope" not found`, false},
		{[]string{"vm", "start", "nope"}, `"nope" not found`, false},
		{[]string{"vm", "exec", "nope", "--", "true"}, `"nope" not found`, false},
		{[]string{"vm", "edit", "keep", "--vcpus", "2"}, `vm "keep" is running`, true},
		{[]string{"vm", "edit", "keep", "--memory", "1KiB"}, "less than 1MiB", true},
		{[]string{"vm", "start", "keep"}, "", true},
		{[]string{"image", "register", "bad", "--kernel", "/nope", "--initrd", "/nope", "--rootfs", "/nope"}, "/nope", false},
		{[]string{"image", "show", "nope"}, `"nope" not found`, false},
	}
	for _, tt := range tests {
		r := e.banger(tt.args...)
		name := strings.Join(tt.args, " ")
		if r.code == 0 {
			t.Errorf("banger %s: succeeded, want an error", name)
			continue
		}
		if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
			t.Errorf("banger %s: panicked:\n%s", name, r.stderr)
		}
		if !strings.Contains(r.stderr, tt.want) {
			t.Errorf("banger %s: stderr %q does not say %q", name, r.stderr, tt.want)
		}
		if tt.wantFix && !strings.Contains(r.stderr, "fix:") {
			t.Errorf("banger %s: no fix given:\n%s", name, r.stderr)
		}
	}
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 1 || vms[0].Name != "keep" {
		t.Errorf("bad creates left VMs behind: %+v", vms)
	}
	e.must("vm", "delete", "keep")
	e.assertNoLeaks()
}
