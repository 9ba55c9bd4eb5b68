package dmsnap

import (
	"encoding/json"
	"slices"
	"testing"

	"banger/internal/disk"
)

// A disk record from the banger before State existed still names its
// loops and target to Detach.
func TestStateOfAnOldRecord(t *testing.T) {
	var d disk.Disk
	old := `{"driver":"dmsnap","path":"/dev/mapper/banger-a-1","format":"raw","files":["/v/a/system.cow"],
		"loops":["/dev/loop3","/dev/loop4"],"dm_name":"banger-a-1","dm_device":"/dev/mapper/banger-a-1"}`
	if err := json.Unmarshal([]byte(old), &d); err != nil {
		t.Fatal(err)
	}
	s := stateOf(d)
	if !slices.Equal(s.Loops, []string{"/dev/loop3", "/dev/loop4"}) || s.DMName != "banger-a-1" || s.DMDevice != "/dev/mapper/banger-a-1" {
		t.Errorf("stateOf = %+v", s)
	}
	if got := stateOf(disk.Disk{State: json.RawMessage(`"garbage"`)}); got.DMName != "" || got.Loops != nil {
		t.Errorf("stateOf garbage = %+v, want empty", got)
	}
}
