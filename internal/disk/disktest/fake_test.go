package disktest_test

import (
	"testing"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// The fake keeps the contract it stands in for.
func TestFakeConformance(t *testing.T) {
	disktest.Run(t, func(t *testing.T, dir string) disk.Driver { return &disktest.Fake{} })
}
