package main

import (
	"context"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// healthCheckExprs is one entry of a Flux Kustomization's
// spec.healthCheckExprs.
type healthCheckExprs struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Current    string `json:"current"`
	InProgress string `json:"inProgress,omitempty"`
	Failed     string `json:"failed,omitempty"`
}

type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		HealthCheckExprs []healthCheckExprs `json:"healthCheckExprs"`
	} `json:"spec"`
}

// newFluxProgram parses an expression in the environment kustomize-controller
// gives healthCheckExprs: parsed, not type-checked (a CRD need not have the
// five usual top-level fields), every top-level field of the object a
// variable, Kubernetes' interrupt-check frequency.
func newFluxProgram(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return nil, err
	}
	ast, issues := env.Parse(expr)
	if issues != nil && issues.Err() != nil {
		return nil, fmt.Errorf("parsing %q: %s", expr, issues.String())
	}
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
}

type fluxCheck struct {
	exprs    healthCheckExprs
	programs []fluxRule
}

type fluxRule struct {
	name    string
	status  string
	program cel.Program
}

func loadFluxChecks(path string) ([]fluxCheck, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k kustomization
	// The snippet is a whole Kustomization; only healthCheckExprs matter here.
	if err := yaml.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if k.Kind != "Kustomization" || len(k.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s: not a Kustomization with spec.healthCheckExprs", path)
	}
	var checks []fluxCheck
	for _, e := range k.Spec.HealthCheckExprs {
		if e.Current == "" {
			return nil, fmt.Errorf("%s: %s %s: current is required", path, e.APIVersion, e.Kind)
		}
		check := fluxCheck{exprs: e}
		// RFC 0009's order: inProgress, then failed, then current.
		for _, rule := range []struct{ name, status, expr string }{
			{"inProgress", "InProgress", e.InProgress},
			{"failed", "Failed", e.Failed},
			{"current", "Current", e.Current},
		} {
			if rule.expr == "" {
				continue
			}
			prog, err := newFluxProgram(rule.expr)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, rule.name, err)
			}
			check.programs = append(check.programs, fluxRule{name: rule.name, status: rule.status, program: prog})
		}
		checks = append(checks, check)
	}
	return checks, nil
}

// fluxStatus is what kustomize-controller decides for an object its
// healthCheckExprs cover: InProgress while status.observedGeneration (when it
// is an integer) differs from metadata.generation, then the first expression
// that holds, InProgress when none does.
func fluxStatus(check fluxCheck, u *unstructured.Unstructured) (string, string, error) {
	observed, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if err == nil && found {
		generation, found, err := unstructured.NestedInt64(u.Object, "metadata", "generation")
		if err == nil && found && observed != generation {
			return "InProgress", "observedGeneration", nil
		}
	}
	for _, rule := range check.programs {
		val, _, err := rule.program.ContextEval(context.Background(), u.Object)
		if err != nil {
			return "", "", fmt.Errorf("%s/%s: %s: %w", u.GetNamespace(), u.GetName(), rule.name, err)
		}
		b, ok := val.(types.Bool)
		if !ok {
			return "", "", fmt.Errorf("%s/%s: %s is not a boolean", u.GetNamespace(), u.GetName(), rule.name)
		}
		if b {
			return rule.status, rule.name, nil
		}
	}
	return "InProgress", "none", nil
}

func runFluxHealth(kustomizationPath string, files []string) error {
	checks, err := loadFluxChecks(kustomizationPath)
	if err != nil {
		return err
	}
	return judgeEach(files, func(u *unstructured.Unstructured) (string, string, error) {
		// kustomize-controller matches by group and kind (an empty kind: the whole group)
		gk := u.GroupVersionKind().GroupKind()
		for _, check := range checks {
			want := schema.FromAPIVersionAndKind(check.exprs.APIVersion, check.exprs.Kind).GroupKind()
			if want.Group == gk.Group && (want.Kind == "" || want.Kind == gk.Kind) {
				return fluxStatus(check, u)
			}
		}
		return "", "", fmt.Errorf("%s/%s: no healthCheckExprs for %s", u.GetNamespace(), u.GetName(), gk)
	})
}
