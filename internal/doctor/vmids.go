package doctor

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/vmm/firecracker"
)

// Check names of the engines' confinement.
const (
	CheckVMIDs       = "vm-ids"
	CheckConfinement = "firecracker-confinement"
)

// idFiles are the account databases the VM id range must not overlap.
var idFiles = []string{"/etc/passwd", "/etc/group"}

// vmIDsCheck says which uids the engines run as and fails when a user or
// group of the host holds one: a VMM escape would become that account.
func vmIDsCheck(cfg config.Config) api.Check {
	lo, hi := cfg.VMUIDBase, cfg.VMUIDBase+config.VMUIDRange-1
	ch := api.Check{Name: CheckVMIDs, Status: api.CheckOK,
		Detail: fmt.Sprintf("each VM's engine runs as uid = gid = %d + its vsock CID (range %d-%d, no account in it)", lo, lo, hi)}
	for _, f := range idFiles {
		if name, id, ok := accountInRange(f, lo, hi); ok {
			ch.Status = api.CheckFail
			ch.Detail = fmt.Sprintf("%s has %q with id %d, inside the VM id range %d-%d", f, name, id, lo, hi)
			ch.Fix = "set vm_uid_base in the config to a range no user or group uses"
			return ch
		}
	}
	return ch
}

// accountInRange returns the first entry of a passwd/group file whose id
// is within [lo, hi].
func accountInRange(path string, lo, hi int) (string, int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 {
			continue
		}
		id, err := strconv.Atoi(fields[2])
		if err == nil && id >= lo && id <= hi {
			return fields[0], id, true
		}
	}
	return "", 0, false
}

// confinementCheck says how Firecracker would run: under the jailer (found
// or configured), unconfined as root (the opt-out: a warning), or not at
// all.
func confinementCheck(cfg config.Config, fcPath string) api.Check {
	ch := api.Check{Name: CheckConfinement}
	jailer := cfg.JailerBin
	if jailer == "" {
		jailer = firecracker.FindJailer(fcPath)
	}
	switch {
	case jailer != "":
		ch.Status = api.CheckOK
		ch.Detail = "Firecracker runs under the jailer " + filepath.Clean(jailer) + ": each VM as its own uid, chrooted, own pid namespace and cgroup"
	case cfg.FirecrackerUnjailed:
		ch.Status = api.CheckWarn
		ch.Detail = "firecracker_unjailed: Firecracker runs as root without the jailer; a VMM escape is host root"
		ch.Fix = "install the jailer from the same Firecracker release beside firecracker, and remove firecracker_unjailed"
	default:
		ch.Status = api.CheckWarn
		ch.Detail = "no jailer: Firecracker is not used (it runs only under the jailer)"
		ch.Fix = "install the jailer from the same Firecracker release beside firecracker (or set firecracker_unjailed = true to run it as root, unconfined)"
	}
	return ch
}
