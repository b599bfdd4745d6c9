// Command gitopscheck tells how the GitOps tools judge Kubernetes objects,
// using the libraries those tools run:
//
//	gitopscheck kstatus [FILE...]                  kstatus (sigs.k8s.io/cli-utils status.Compute): what Flux,
//	                                               kpt and cli-utils' appliers wait on
//	gitopscheck argo-health SCRIPT [FILE...]       an Argo CD health.lua in gopher-lua, set up as Argo CD sets it up
//	gitopscheck argo-test DIR                      DIR/health_test.yaml, Argo CD's resource-customization test format
//	gitopscheck flux-health KUSTOMIZATION [FILE...] a Flux Kustomization's spec.healthCheckExprs in cel-go
//
// Objects are read from the FILEs (standard input when none) as YAML or JSON,
// one document each or a List (`kubectl get -o json` output). Every verdict is
// printed as one JSON line; argo-test exits 1 when a case differs.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  gitopscheck kstatus [FILE...]
  gitopscheck argo-health SCRIPT [FILE...]
  gitopscheck argo-test DIR
  gitopscheck flux-health KUSTOMIZATION [FILE...]`

// verdict is one line of output: which object, and what the tool says of it.
type verdict struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "kstatus":
		err = runKstatus(args)
	case "argo-health":
		if len(args) < 1 {
			fail(usage)
		}
		err = runArgoHealth(args[0], args[1:])
	case "argo-test":
		if len(args) != 1 {
			fail(usage)
		}
		var ok bool
		ok, err = runArgoTest(args[0])
		if err == nil && !ok {
			os.Exit(1)
		}
	case "flux-health":
		if len(args) < 1 {
			fail(usage)
		}
		err = runFluxHealth(args[0], args[1:])
	default:
		fail(usage)
	}
	if err != nil {
		fail("gitopscheck: " + err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(2)
}

func emit(out io.Writer, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(line))
	return err
}
