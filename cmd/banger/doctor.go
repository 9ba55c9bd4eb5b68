package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/doctor"
)

func doctorCmd(e *env) *cobra.Command {
	return noArgsCmd("doctor", "Check that this host can run banger (no daemon needed)", e.doctor)
}

// doctor runs the checks locally; exit code 1 when any check fails.
func (e *env) doctor(ctx context.Context) error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	report := doctor.Run(ctx, cfg)
	if e.jsonOut {
		if err := e.printJSON(report); err != nil {
			return err
		}
	} else {
		printChecks(e.stdout, report)
	}
	if doctor.Failed(report) {
		return exitError{1}
	}
	return nil
}

// printChecks writes one line per check and an indented fix line.
func printChecks(w io.Writer, r api.DoctorReport) {
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", c.Status, width, c.Name, c.Detail)
		if c.Fix != "" && c.Status != api.CheckOK {
			fmt.Fprintf(w, "      fix: %s\n", c.Fix)
		}
	}
}
