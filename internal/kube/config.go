package kube

import (
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// TypeConfig is how pods of one machine type are placed, from the server's
// configuration file:
//
//	kubernetes:
//	  machine_types:
//	    GPU-T4:
//	      node_selector: {cloud.google.com/gke-accelerator: nvidia-tesla-t4}
//	      gpu_resource: nvidia.com/gpu     # the default
//	      runtime_class: gvisor
//
// Keys outside `kubernetes` belong to other parts of the configuration.
type TypeConfig struct {
	NodeSelector map[string]string `yaml:"node_selector"`
	// GPUResource is the extended resource a GPU type requests; default
	// nvidia.com/gpu.
	GPUResource string `yaml:"gpu_resource"`
	// RuntimeClass, if set, runs the type's pods under that RuntimeClass.
	RuntimeClass string `yaml:"runtime_class"`
}

// DefaultGPUResource is the resource GPU machine types request.
const DefaultGPUResource = "nvidia.com/gpu"

// LoadTypeConfigs reads the `kubernetes.machine_types` part of the server's
// configuration file; a file without one configures nothing.
func LoadTypeConfigs(path string) (map[string]TypeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	var file struct {
		Kubernetes struct {
			MachineTypes map[string]TypeConfig `yaml:"machine_types"`
		} `yaml:"kubernetes"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, path, err)
	}
	return file.Kubernetes.MachineTypes, nil
}
