#!/usr/bin/env python3
"""Write N generated manifests, one per file, into DIR: a cluster, then task
definitions and services in pairs (realistic sizes: two containers, health
checks, port mappings, environment). Deterministic for a given N."""
import os
import sys

TD = """apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata:
  name: app-{i}
  labels: {{team: team-{team}}}
spec:
  cpu: 256
  memory: 512
  containerDefinitions:
    - name: app
      image: busybox:stable
      cpu: 128
      memory: 256
      memoryReservation: 128
      command: ["httpd", "-f", "-p", "8080"]
      environment:
        - {{name: MODE, value: prod}}
        - {{name: INDEX, value: "{i}"}}
      portMappings:
        - {{containerPort: 8080, hostPort: 0, protocol: tcp}}
      healthCheck:
        command: ["CMD-SHELL", "wget -q -O /dev/null http://localhost:8080/ || exit 1"]
        interval: 10
      dependsOn: [{{containerName: sidecar, condition: START}}]
    - name: sidecar
      image: busybox:stable
      essential: false
      memory: 64
      command: ["sleep", "3600"]
"""

SVC = """apiVersion: reconcile/v1alpha1
kind: Service
metadata:
  name: app-{i}
spec:
  cluster: bench
  taskDefinition: app-{i}
  desiredCount: {count}
  deploymentConfiguration:
    minimumHealthyPercent: 50
    maximumPercent: 200
    deploymentCircuitBreaker: {{enable: true, rollback: true}}
  placementStrategy:
    - {{type: spread, field: "attribute:zone"}}
    - {{type: binpack, field: memory}}
"""

CLUSTER = """apiVersion: reconcile/v1alpha1
kind: Cluster
metadata:
  name: bench
spec: {}
"""


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cluster.yaml"), "w") as f:
        f.write(CLUSTER)
    for k in range(n - 1):
        i = k // 2
        if k % 2 == 0:
            text, name = TD.format(i=i, team=i % 17), f"td-{i:05}.yaml"
        else:
            text, name = SVC.format(i=i, count=1 + i % 5), f"svc-{i:05}.yaml"
        with open(os.path.join(out, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
