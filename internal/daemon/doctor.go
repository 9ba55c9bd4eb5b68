package daemon

import "banger/internal/doctor"

// runDoctor answers GET /v1/doctor; a variable so tests can stub the host
// probes.
var runDoctor = doctor.Run
