package disk

import (
	"encoding/json"
	"testing"
)

// A system disk record written before State existed (dmsnap's kernel
// state beside the common fields) loads with that state in State, and a
// record written now round-trips unchanged.
func TestDiskRecordLoadsOldAndNewFormats(t *testing.T) {
	old := `{"driver":"dmsnap","path":"/dev/mapper/banger-a-1","format":"raw",
		"files":["/v/a/system.cow","/v/a/system.cow.base"],
		"loops":["/dev/loop3","/dev/loop4"],"dm_name":"banger-a-1","dm_device":"/dev/mapper/banger-a-1"}`
	var d Disk
	if err := json.Unmarshal([]byte(old), &d); err != nil {
		t.Fatal(err)
	}
	if d.Driver != DMSnap || d.Path != "/dev/mapper/banger-a-1" || len(d.Files) != 2 {
		t.Fatalf("common fields: %+v", d)
	}
	var st map[string]any
	if err := json.Unmarshal(d.State, &st); err != nil {
		t.Fatalf("State %s: %v", d.State, err)
	}
	if st["dm_name"] != "banger-a-1" || st["dm_device"] != "/dev/mapper/banger-a-1" || len(st["loops"].([]any)) != 2 {
		t.Errorf("State = %s, want the old loops and dm fields", d.State)
	}

	for _, in := range []string{
		`{"driver":"copy","path":"/v/a/system.ext4","format":"raw","files":["/v/a/system.ext4"]}`,
		`{"driver":"dmsnap","path":"/dev/mapper/x","format":"raw","state":{"dm_name":"x"}}`,
	} {
		var d Disk
		if err := json.Unmarshal([]byte(in), &d); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(d)
		var again Disk
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(again)
		if string(b) != string(b2) {
			t.Errorf("round trip changed %s to %s", b, b2)
		}
	}
	var n Disk
	if err := json.Unmarshal([]byte(`{"driver":"copy","state":null}`), &n); err != nil || n.State != nil {
		t.Errorf("null state: %v %s", err, n.State)
	}
}
