package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"

	"banger/internal/api"
)

// Alloc says where CreateVM picks a VM's guest address and vsock CID from.
type Alloc struct {
	Subnet   netip.Prefix // IPv4 subnet of the bridge
	Reserved []netip.Addr // host addresses never handed out, e.g. the gateway
	MinCID   uint32       // lowest vsock CID to hand out; 0 means 3 (0-2 are reserved by vsock)
}

// vmColumns lists the stored columns in scan order.
const vmColumns = `id, name, image_id, image_name, vcpus, memory_mib, disk_bytes, created_at, updated_at,
	state, guest_ip, mac, dns_name, engine, accel, api_socket, agent_socket, agent_transport, vsock_cid,
	serial_log_path, engine_log_path, metrics_path, vm_dir, system_disk, system_disk_kind, work_disk,
	last_error, started_at, stopped_at`

// runtimeColumns are the columns UpdateVMRuntime writes, in vmRuntimeArgs order.
var runtimeColumns = []string{"state", "guest_ip", "mac", "dns_name", "engine", "accel", "api_socket",
	"agent_socket", "agent_transport", "vsock_cid", "serial_log_path", "engine_log_path", "metrics_path",
	"vm_dir", "system_disk", "system_disk_kind", "work_disk", "last_error", "started_at", "stopped_at"}

// CreateVM inserts vm, allocating its guest IP, MAC and vsock CID, all in
// one transaction under the write mutex. It sets ID, CreatedAt, UpdatedAt
// and Runtime.GuestIP/MAC/VsockCID. A taken name is AlreadyExists; a full
// subnet is Unavailable.
func (s *Store) CreateVM(ctx context.Context, vm *api.VM, alloc Alloc) error {
	if vm.Name == "" {
		return api.Invalid("vm name is empty").WithFix("give the vm a name")
	}
	if !alloc.Subnet.IsValid() || !alloc.Subnet.Addr().Is4() {
		return api.Invalid("vm subnet %s is not an IPv4 prefix", alloc.Subnet).WithFix("set subnet in the config, e.g. 10.203.0.0/24")
	}
	if alloc.MinCID == 0 {
		alloc.MinCID = 3
	}
	rec := *vm
	if rec.ID == "" {
		rec.ID = newID()
	}
	t := now()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = t
	}
	rec.UpdatedAt = t
	if rec.Runtime.State == "" {
		rec.Runtime.State = api.VMCreating
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if taken, err := exists(ctx, tx, `SELECT count(*) FROM vms WHERE name = ?`, rec.Name); err != nil || taken {
			if taken {
				return vmExists(rec.Name)
			}
			return err
		}
		ip, err := freeIPLocked(ctx, tx, alloc)
		if err != nil {
			return err
		}
		cid, err := freeCIDLocked(ctx, tx, alloc.MinCID)
		if err != nil {
			return err
		}
		rec.Runtime.GuestIP = ip.String()
		rec.Runtime.MAC = MACForIP(ip)
		rec.Runtime.VsockCID = cid
		_, err = tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (`+placeholders(29)+`)`, vmArgs(rec)...)
		if isForeignKeyViolation(err) {
			return api.NotFound("image %q (id %s) not found: %w", rec.ImageName, rec.ImageID, err).WithAction("image list")
		}
		if isUniqueViolation(err) {
			return api.AlreadyExists("vm %s conflicts with an existing vm: %w", rec.Name, err).WithAction("vm list")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("creating vm %s: %w", rec.Name, err)
	}
	*vm = rec
	return nil
}

func vmExists(name string) error {
	return api.AlreadyExists("vm %q already exists", name).
		WithFix("pick another name, or delete it first").WithAction("vm delete", name)
}

func vmNotFound(nameOrID string) error {
	return api.NotFound("vm %q not found", nameOrID).WithAction("vm list")
}

// MACForIP derives a VM's MAC from its guest IPv4 address: locally
// administered unicast 02:42 followed by the four address bytes, so it is
// unique whenever the address is.
func MACForIP(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// freeIPLocked returns the lowest host address of alloc.Subnet that no VM
// holds and that is not reserved, skipping the network and broadcast
// addresses.
func freeIPLocked(ctx context.Context, tx *sql.Tx, alloc Alloc) (netip.Addr, error) {
	used, err := queryStrings(ctx, tx, `SELECT guest_ip FROM vms`)
	if err != nil {
		return netip.Addr{}, err
	}
	taken := make(map[netip.Addr]bool, len(used)+len(alloc.Reserved))
	for _, u := range used {
		if a, err := netip.ParseAddr(u); err == nil {
			taken[a] = true
		}
	}
	for _, r := range alloc.Reserved {
		taken[r] = true
	}
	p := alloc.Subnet.Masked()
	bits := 32 - p.Bits()
	if bits < 2 {
		return netip.Addr{}, api.Invalid("subnet %s has no host addresses", p).WithFix("use a prefix of /29 or shorter")
	}
	network := p.Addr()
	for a, i := network.Next(), 1; i < 1<<bits-1; a, i = a.Next(), i+1 {
		if !taken[a] {
			return a, nil
		}
	}
	return netip.Addr{}, api.Unavailable("subnet %s is full", p).
		WithFix("delete vms you no longer need, or set a larger subnet in the config").WithAction("vm list")
}

// freeCIDLocked returns the lowest vsock CID >= min that no VM holds.
func freeCIDLocked(ctx context.Context, tx *sql.Tx, min uint32) (uint32, error) {
	rows, err := tx.QueryContext(ctx, `SELECT vsock_cid FROM vms WHERE vsock_cid >= ? ORDER BY vsock_cid`, min)
	if err != nil {
		return 0, fmt.Errorf("reading vsock cids: %w", err)
	}
	defer rows.Close()
	next := min
	for rows.Next() {
		var c uint32
		if err := rows.Scan(&c); err != nil {
			return 0, fmt.Errorf("reading vsock cids: %w", err)
		}
		if c > next {
			break
		}
		next = c + 1
	}
	return next, rows.Err()
}

// GetVM returns the VM with that name or ID.
func (s *Store) GetVM(ctx context.Context, nameOrID string) (api.VM, error) {
	vm, err := getByNameOrID(ctx, s.db, "vms", vmColumns, nameOrID, scanVM, vmNotFound)
	if err != nil {
		return api.VM{}, err
	}
	vms, err := withLifetimes(ctx, s.db, []api.VM{vm}, vm.ID)
	if err != nil {
		return api.VM{}, err
	}
	return vms[0], nil
}

// ListVMs returns every VM, ordered by name.
func (s *Store) ListVMs(ctx context.Context) ([]api.VM, error) {
	vms, err := queryAll(ctx, s.db, "listing vms", scanVM, `SELECT `+vmColumns+` FROM vms ORDER BY name`)
	if err != nil {
		return nil, err
	}
	return withLifetimes(ctx, s.db, vms, "")
}

// UpdateVM overwrites the whole record with vm.ID, Runtime included, and
// bumps UpdatedAt. CreatedAt is kept as stored.
func (s *Store) UpdateVM(ctx context.Context, vm api.VM) error {
	vm.UpdatedAt = now()
	cols := strings.Split(strings.Join(strings.Fields(vmColumns), ""), ",")
	var set []string
	args := vmArgs(vm)
	var vals []any
	for i, c := range cols {
		if c == "id" || c == "created_at" {
			continue
		}
		set = append(set, c+" = ?")
		vals = append(vals, args[i])
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET `+strings.Join(set, ", ")+` WHERE id = ?`, append(vals, vm.ID)...)
		if err != nil {
			return vmWriteErr(vm, err)
		}
		return mustAffect(res, vmNotFound(vm.ID))
	})
	if err != nil {
		return fmt.Errorf("updating vm %s: %w", vm.Name, err)
	}
	return nil
}

// UpdateVMRuntime overwrites the runtime part of the VM with id and bumps
// UpdatedAt.
func (s *Store) UpdateVMRuntime(ctx context.Context, id string, rt api.VMRuntime) error {
	set := make([]string, 0, len(runtimeColumns)+1)
	for _, c := range runtimeColumns {
		set = append(set, c+" = ?")
	}
	set = append(set, "updated_at = ?")
	args := append(runtimeArgs(rt), fmtTime(now()), id)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET `+strings.Join(set, ", ")+` WHERE id = ?`, args...)
		if err != nil {
			return vmWriteErr(api.VM{ID: id, Runtime: rt}, err)
		}
		return mustAffect(res, vmNotFound(id))
	})
	if err != nil {
		return fmt.Errorf("updating runtime of vm %s: %w", id, err)
	}
	return nil
}

func vmWriteErr(vm api.VM, err error) error {
	switch {
	case isUniqueViolation(err):
		return api.AlreadyExists("vm name, guest ip, mac or vsock cid of %s is taken by another vm: %w", vm.ID, err).
			WithAction("vm list")
	case isForeignKeyViolation(err):
		return api.NotFound("image %s of vm %s not found: %w", vm.ImageID, vm.ID, err).WithAction("image list")
	}
	return err
}

// DeleteVM deletes the VM with id. A missing VM is NotFound.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("deleting vm %s: %w", id, err)
		}
		return mustAffect(res, vmNotFound(id))
	})
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func vmArgs(vm api.VM) []any {
	head := []any{vm.ID, vm.Name, nullIfEmpty(vm.ImageID), vm.ImageName, vm.VCPUs, vm.MemoryMiB, vm.DiskBytes,
		fmtTime(vm.CreatedAt), fmtTime(vm.UpdatedAt)}
	return append(head, runtimeArgs(vm.Runtime)...)
}

func runtimeArgs(rt api.VMRuntime) []any {
	return []any{string(rt.State), rt.GuestIP, rt.MAC, rt.DNSName, rt.Engine, rt.Accel, rt.APISocket,
		rt.AgentSocket, rt.AgentTransport, rt.VsockCID, rt.SerialLogPath, rt.EngineLogPath, rt.MetricsPath,
		rt.VMDir, rt.SystemDisk, rt.SystemDiskKind, rt.WorkDisk, rt.LastError, fmtTime(rt.StartedAt),
		fmtTime(rt.StoppedAt)}
}

func scanVM(sc scanner) (api.VM, error) {
	var vm api.VM
	var imageID sql.NullString
	var state, created, updated, started, stopped string
	rt := &vm.Runtime
	err := sc.Scan(&vm.ID, &vm.Name, &imageID, &vm.ImageName, &vm.VCPUs, &vm.MemoryMiB, &vm.DiskBytes,
		&created, &updated, &state, &rt.GuestIP, &rt.MAC, &rt.DNSName, &rt.Engine, &rt.Accel, &rt.APISocket,
		&rt.AgentSocket, &rt.AgentTransport, &rt.VsockCID, &rt.SerialLogPath, &rt.EngineLogPath, &rt.MetricsPath,
		&rt.VMDir, &rt.SystemDisk, &rt.SystemDiskKind, &rt.WorkDisk, &rt.LastError, &started, &stopped)
	if err != nil {
		return api.VM{}, err
	}
	vm.ImageID = imageID.String
	rt.State = api.VMState(state)
	for _, f := range []struct {
		s string
		t *timeField
	}{{created, (*timeField)(&vm.CreatedAt)}, {updated, (*timeField)(&vm.UpdatedAt)},
		{started, (*timeField)(&rt.StartedAt)}, {stopped, (*timeField)(&rt.StoppedAt)}} {
		if err := f.t.set(f.s); err != nil {
			return api.VM{}, fmt.Errorf("vm %s: %w", vm.Name, err)
		}
	}
	return vm, nil
}
