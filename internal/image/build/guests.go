package build

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/progress"
)

// Guests is what image build and promote need from the VM orchestrator
// (implemented by vm.Manager, wired in internal/wiring).
//
// Lifecycle of a builder VM: Create makes it (NoStart: disks only, the VM
// stopped); GrowSystemDisk enlarges its stopped system disk (the guest
// grows the filesystem); Start boots it and returns once its agent answers
// (both report their stages on rep); Exec opens streams speaking the
// agent's exec protocol (agent.Exec drives them); Stop powers it off
// cleanly; ExportDisks copies the stopped VM's system disk out as a raw
// ext4 image (and its work disk, when workDst is not ""); Delete removes
// the VM and everything it had, whatever state it is in.
type Guests interface {
	Create(ctx context.Context, req api.VMCreateRequest, rep progress.Reporter) (api.VM, error)
	GrowSystemDisk(ctx context.Context, name string, size int64) error
	Start(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	Exec(ctx context.Context, name string) (net.Conn, error)
	Stop(ctx context.Context, name string, rep progress.Reporter) (api.VM, error)
	ExportDisks(ctx context.Context, name, systemDst, workDst string) error
	Delete(ctx context.Context, name string, rep progress.Reporter) error
}

// guestExec runs argv in VM name as root in /root with env, stdin and the
// combined output going to out. It returns the command's exit code.
func guestExec(ctx context.Context, g Guests, name string, argv []string, env map[string]string,
	stdin io.Reader, out io.Writer) (int, error) {
	conn, err := g.Exec(ctx, name)
	if err != nil {
		return -1, err
	}
	return agent.Exec(ctx, conn, api.ExecRequest{Argv: argv, Env: env, Dir: "/root"}, stdin, out, out)
}

// putScript writes stdin to path (parents created) with mode, atomically:
// a temporary file renamed into place.
const putScript = `set -e
mkdir -p "$(dirname "$1")"
cat > "$1.banger-part"
chmod "$2" "$1.banger-part"
mv -f "$1.banger-part" "$1"`

// guestPut copies r into the guest at path with mode (e.g. 0o644).
func guestPut(ctx context.Context, g Guests, name, path string, mode uint32, r io.Reader) error {
	var out bytes.Buffer
	code, err := guestExec(ctx, g, name, []string{"/bin/sh", "-c", putScript, "sh", path, fmt.Sprintf("%o", mode)},
		nil, r, &out)
	if err != nil {
		return fmt.Errorf("copying to %s in the guest: %w", path, err)
	}
	if code != 0 {
		return fmt.Errorf("copying to %s in the guest: exit %d: %s", path, code, strings.TrimSpace(out.String()))
	}
	return nil
}
