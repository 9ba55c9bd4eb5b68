package web

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The web UI shows a fix action in words (and offers a button for what it
// can do itself), never as a banger command line. Runs assets/fix.js under
// node.
func TestFixActionInWords(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node to run the web UI's fix.js: apt-get install nodejs")
	}
	abs, err := filepath.Abs("assets/fix.js")
	if err != nil {
		t.Fatal(err)
	}
	script := `
import { actionWords, buttonAction, fixText } from 'file://` + abs + `';
const out = [
  fixText({ fix: 'stop it first', action: { verb: 'vm stop', args: ['dev'] } }),
  actionWords({ verb: 'vm delete', args: ['a', 'b'] }),
  actionWords({ verb: 'image delete', args: ['--force', 'base'] }),
  actionWords({ verb: 'vm list' }),
  actionWords({ verb: 'snapshot list' }),
  actionWords({ verb: 'image unwarm', args: ['base'] }),
  actionWords({ verb: 'snapshot delete', args: ['s1'] }),
  fixText({ fix: 'no action here' }),
  JSON.stringify(buttonAction({ verb: 'vm start', args: ['my vm'] })),
  JSON.stringify(buttonAction({ verb: 'vm delete', args: ['dev'] })),
];
console.log(out.join('\n'));
`
	b, err := exec.Command(node, "--input-type=module", "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	want := []string{
		"stop it first: stop VM dev",
		"delete VMs a, b",
		"delete image base, forced",
		"see the VMs page",
		"see the Snapshots page",
		"unwarm image base (Images page)",
		"delete snapshot s1",
		"no action here",
		`{"method":"POST","path":"/v1/vms/my%20vm/start","label":"Start my vm"}`,
		"null",
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range got {
		if strings.Contains(line, "banger ") {
			t.Errorf("a command line reached the web UI: %q", line)
		}
	}
}
