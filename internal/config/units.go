package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes. In TOML it is a string with a unit ("512MiB",
// "2G", "4GiB", "1.5G") or a plain integer of bytes. K, M, G, T and KiB, MiB,
// GiB, TiB are powers of 1024; KB, MB, GB, TB are powers of 1000.
type Size int64

// Common sizes.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a size such as "2GiB", "512M" or "1073741824".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, sizeErr(s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, sizeErr(s)
	}
	v := f * mult
	if v > math.MaxInt64/2 || v != math.Trunc(v) {
		return 0, sizeErr(s)
	}
	return Size(v), nil
}

func sizeErr(s string) error {
	return fmt.Errorf("invalid size %q: use a number with a unit, e.g. 2GiB", s)
}

// String renders s in the largest binary unit that divides it exactly, e.g.
// "1GiB", "1536MiB", or plain bytes.
func (s Size) String() string {
	for _, u := range []struct {
		n    Size
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalText renders s as String does.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size with ParseSize.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MiB returns s in whole mebibytes, rounded down.
func (s Size) MiB() int { return int(s / MiB) }

// Duration is a time.Duration written in TOML as a string such as "2s",
// "500ms" or "1m30s".
type Duration time.Duration

// String renders d like time.Duration does ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText renders d as String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration with a unit.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a number with a unit, e.g. 2s, 500ms or 1m30s", string(b))
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
