//go:build tools

// Package tools pins the postgres_exporter command this module builds.
package tools

import _ "github.com/prometheus-community/postgres_exporter/cmd/postgres_exporter"
