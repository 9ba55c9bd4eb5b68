package main

import (
	"fmt"

	"banger/internal/api"
	"banger/internal/config"
)

// sizeFlag is a pflag.Value parsing sizes like config files do ("2GiB").
type sizeFlag struct {
	v   config.Size
	set bool
}

func (s *sizeFlag) String() string {
	if !s.set {
		return ""
	}
	return s.v.String()
}

// Set parses with config.Size's UnmarshalText; pflag prefixes errors with
// the flag's name.
func (s *sizeFlag) Set(v string) error {
	if err := s.v.UnmarshalText([]byte(v)); err != nil {
		return err
	}
	s.set = true
	return nil
}

func (s *sizeFlag) Type() string { return "size" }

func (s *sizeFlag) bytes() int64 { return int64(s.v) }

// mib returns the size in MiB for a memory flag, refusing values below 1 MiB
// (a bare number is bytes).
func (s *sizeFlag) mib(flag string) (int, error) {
	if !s.set {
		return 0, nil
	}
	if s.v < config.MiB {
		return 0, api.Invalid("--%s %s is less than 1MiB (a bare number is bytes)", flag, s.v).
			WithFix(fmt.Sprintf("add a unit, e.g. --%s %dMiB", flag, int64(s.v)))
	}
	return s.v.MiB(), nil
}
