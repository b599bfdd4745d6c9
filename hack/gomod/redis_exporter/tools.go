//go:build tools

// Package tools pins the redis_exporter command this module builds.
package tools

import _ "github.com/oliver006/redis_exporter"
