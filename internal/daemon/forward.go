package daemon

import (
	"net/http"
	"strconv"

	"banger/internal/api"
)

func (d *Daemon) addForward(w http.ResponseWriter, r *http.Request) error {
	var req api.ForwardRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	f, err := d.vms.AddForward(r.Context(), r.PathValue("name"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, f)
	return nil
}

func (d *Daemon) removeForward(w http.ResponseWriter, r *http.Request) error {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		return api.Invalid("%q is not a host port", r.PathValue("port"))
	}
	if err := d.vms.RemoveForward(r.Context(), r.PathValue("name"), port); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}
