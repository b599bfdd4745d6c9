//go:build tools

// Package tools pins the pgbouncer_exporter command this module builds.
package tools

import _ "github.com/prometheus-community/pgbouncer_exporter"
