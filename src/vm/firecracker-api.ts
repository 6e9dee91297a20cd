/**
 * Firecracker's published API schema, vendored as data: the `definitions` of
 * src/firecracker/swagger/firecracker.yaml (Swagger 2.0, API version 1.17.0-dev) reachable from
 * FullVmConfiguration — the shape of the `--config-file` JSON — converted from YAML to JSON with the
 * descriptions, defaults and examples dropped. Source: github.com/firecracker-microvm/firecracker at commit
 * 81b38b9dad6056d7a48073e95ac5a9aed51cb2ab.
 *
 * Licence: Apache License 2.0 (the same as tapnet's; http://www.apache.org/licenses/LICENSE-2.0).
 * Firecracker's NOTICE file says:
 *   Firecracker
 *   Copyright 2017-2020 Amazon.com, Inc. or its affiliates. All Rights Reserved.
 *   SPDX-License-Identifier: Apache-2.0
 *
 *   Portions Copyright 2017 The Chromium OS Authors. All rights reserved.
 *   Use of this source code is governed by a BSD-style license that can be
 *   found in the THIRD-PARTY file.
 *
 *   The Firecracker release bundle includes libseccomp which is available
 *   under the LGPLv2.1 license. This is used in the Firecracker build process
 *   to produce cBPF bytecode that is shipped alongside Firecracker for use by
 *   the Linux kernel.
 */

/** A Swagger 2.0 schema object, the subset Firecracker's definitions use. */
export interface SwaggerSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'boolean';
  $ref?: string;
  required?: readonly string[];
  properties?: Readonly<Record<string, SwaggerSchema>>;
  additionalProperties?: SwaggerSchema;
  items?: SwaggerSchema;
  enum?: readonly (string | number)[];
  minimum?: number;
  maximum?: number;
  format?: string;
}

/** The Firecracker API version these definitions come from. */
export const FIRECRACKER_API_VERSION = '1.17.0-dev';

/** Firecracker's schema definitions by name. */
export const FIRECRACKER_DEFINITIONS: Readonly<Record<string, SwaggerSchema>> = {
  ArmRegisterModifier: {
    type: 'object',
    required: ['addr', 'bitmap'],
    properties: {
      addr: {
        type: 'string',
      },
      bitmap: {
        type: 'string',
      },
    },
  },
  Balloon: {
    type: 'object',
    required: ['amount_mib', 'deflate_on_oom'],
    properties: {
      amount_mib: {
        type: 'integer',
      },
      deflate_on_oom: {
        type: 'boolean',
      },
      stats_polling_interval_s: {
        type: 'integer',
      },
      free_page_hinting: {
        type: 'boolean',
      },
      free_page_reporting: {
        type: 'boolean',
      },
    },
  },
  BootSource: {
    type: 'object',
    required: ['kernel_image_path'],
    properties: {
      boot_args: {
        type: 'string',
      },
      initrd_path: {
        type: 'string',
      },
      kernel_image_path: {
        type: 'string',
      },
    },
  },
  CpuConfig: {
    type: 'object',
    properties: {
      kvm_capabilities: {
        type: 'array',
        items: {
          type: 'string',
        },
      },
      cpuid_modifiers: {
        type: 'array',
        items: {
          $ref: '#/definitions/CpuidLeafModifier',
        },
      },
      msr_modifiers: {
        type: 'array',
        items: {
          $ref: '#/definitions/MsrModifier',
        },
      },
      reg_modifiers: {
        type: 'array',
        items: {
          $ref: '#/definitions/ArmRegisterModifier',
        },
      },
      vcpu_features: {
        type: 'array',
        items: {
          $ref: '#/definitions/VcpuFeatures',
        },
      },
    },
  },
  CpuTemplate: {
    type: 'string',
    enum: ['C3', 'T2', 'T2S', 'T2CL', 'T2A', 'V1N1', 'None'],
  },
  CpuidLeafModifier: {
    type: 'object',
    required: ['leaf', 'subleaf', 'flags', 'modifiers'],
    properties: {
      leaf: {
        type: 'string',
      },
      subleaf: {
        type: 'string',
      },
      flags: {
        type: 'integer',
        format: 'int32',
      },
      modifiers: {
        type: 'array',
        items: {
          $ref: '#/definitions/CpuidRegisterModifier',
        },
      },
    },
  },
  CpuidRegisterModifier: {
    type: 'object',
    required: ['register', 'bitmap'],
    properties: {
      register: {
        type: 'string',
        enum: ['eax', 'ebx', 'ecx', 'edx'],
      },
      bitmap: {
        type: 'string',
      },
    },
  },
  Drive: {
    type: 'object',
    required: ['drive_id', 'is_root_device'],
    properties: {
      drive_id: {
        type: 'string',
      },
      partuuid: {
        type: 'string',
      },
      is_root_device: {
        type: 'boolean',
      },
      cache_type: {
        type: 'string',
        enum: ['Unsafe', 'Writeback'],
      },
      is_read_only: {
        type: 'boolean',
      },
      path_on_host: {
        type: 'string',
      },
      rate_limiter: {
        $ref: '#/definitions/RateLimiter',
      },
      io_engine: {
        type: 'string',
        enum: ['Sync', 'Async'],
      },
      socket: {
        type: 'string',
      },
    },
  },
  EntropyDevice: {
    type: 'object',
    properties: {
      rate_limiter: {
        $ref: '#/definitions/RateLimiter',
      },
    },
  },
  FullVmConfiguration: {
    type: 'object',
    properties: {
      balloon: {
        $ref: '#/definitions/Balloon',
      },
      drives: {
        type: 'array',
        items: {
          $ref: '#/definitions/Drive',
        },
      },
      'boot-source': {
        $ref: '#/definitions/BootSource',
      },
      'cpu-config': {
        $ref: '#/definitions/CpuConfig',
      },
      logger: {
        $ref: '#/definitions/Logger',
      },
      'machine-config': {
        $ref: '#/definitions/MachineConfiguration',
      },
      metrics: {
        $ref: '#/definitions/Metrics',
      },
      'memory-hotplug': {
        $ref: '#/definitions/MemoryHotplugConfig',
      },
      'mmds-config': {
        $ref: '#/definitions/MmdsConfig',
      },
      'network-interfaces': {
        type: 'array',
        items: {
          $ref: '#/definitions/NetworkInterface',
        },
      },
      pmem: {
        type: 'array',
        items: {
          $ref: '#/definitions/Pmem',
        },
      },
      vsock: {
        $ref: '#/definitions/Vsock',
      },
      entropy: {
        $ref: '#/definitions/EntropyDevice',
      },
    },
  },
  Logger: {
    type: 'object',
    properties: {
      level: {
        type: 'string',
        enum: ['Error', 'Warning', 'Info', 'Debug', 'Trace', 'Off'],
      },
      log_path: {
        type: 'string',
      },
      show_level: {
        type: 'boolean',
      },
      show_log_origin: {
        type: 'boolean',
      },
      module: {
        type: 'string',
      },
    },
  },
  MachineConfiguration: {
    type: 'object',
    required: ['mem_size_mib', 'vcpu_count'],
    properties: {
      cpu_template: {
        $ref: '#/definitions/CpuTemplate',
      },
      smt: {
        type: 'boolean',
      },
      mem_size_mib: {
        type: 'integer',
      },
      track_dirty_pages: {
        type: 'boolean',
      },
      vcpu_count: {
        type: 'integer',
        minimum: 1,
        maximum: 32,
      },
      huge_pages: {
        type: 'string',
        enum: ['None', 'Transparent', '2M'],
      },
    },
  },
  MemoryHotplugConfig: {
    type: 'object',
    properties: {
      total_size_mib: {
        type: 'integer',
        maximum: 4294967295,
      },
      slot_size_mib: {
        type: 'integer',
        minimum: 128,
        maximum: 4294967295,
      },
      block_size_mib: {
        type: 'integer',
        minimum: 2,
        maximum: 4294967295,
      },
    },
  },
  Metrics: {
    type: 'object',
    required: ['metrics_path'],
    properties: {
      metrics_path: {
        type: 'string',
      },
      emit_id: {
        type: 'boolean',
      },
      properties: {
        type: 'object',
        additionalProperties: {
          type: 'string',
        },
      },
    },
  },
  MmdsConfig: {
    type: 'object',
    required: ['network_interfaces'],
    properties: {
      version: {
        type: 'string',
        enum: ['V1', 'V2'],
      },
      network_interfaces: {
        type: 'array',
        items: {
          type: 'string',
        },
      },
      ipv4_address: {
        type: 'string',
        format:
          '169.254.([1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4]).([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])',
      },
      imds_compat: {
        type: 'boolean',
      },
    },
  },
  MsrModifier: {
    type: 'object',
    required: ['addr', 'bitmap'],
    properties: {
      addr: {
        type: 'string',
      },
      bitmap: {
        type: 'string',
      },
    },
  },
  NetworkInterface: {
    type: 'object',
    required: ['host_dev_name', 'iface_id'],
    properties: {
      guest_mac: {
        type: 'string',
      },
      host_dev_name: {
        type: 'string',
      },
      iface_id: {
        type: 'string',
      },
      mtu: {
        type: 'integer',
        minimum: 68,
        maximum: 65535,
      },
      rx_rate_limiter: {
        $ref: '#/definitions/RateLimiter',
      },
      tx_rate_limiter: {
        $ref: '#/definitions/RateLimiter',
      },
    },
  },
  Pmem: {
    type: 'object',
    required: ['id', 'path_on_host'],
    properties: {
      id: {
        type: 'string',
      },
      path_on_host: {
        type: 'string',
      },
      root_device: {
        type: 'boolean',
      },
      read_only: {
        type: 'boolean',
      },
      rate_limiter: {
        $ref: '#/definitions/RateLimiter',
      },
    },
  },
  RateLimiter: {
    type: 'object',
    properties: {
      bandwidth: {
        $ref: '#/definitions/TokenBucket',
      },
      ops: {
        $ref: '#/definitions/TokenBucket',
      },
    },
  },
  TokenBucket: {
    type: 'object',
    required: ['refill_time', 'size'],
    properties: {
      one_time_burst: {
        type: 'integer',
        format: 'int64',
        minimum: 0,
      },
      refill_time: {
        type: 'integer',
        format: 'int64',
        minimum: 0,
      },
      size: {
        type: 'integer',
        format: 'int64',
        minimum: 0,
      },
    },
  },
  VcpuFeatures: {
    type: 'object',
    required: ['index', 'bitmap'],
    properties: {
      index: {
        type: 'integer',
        format: 'int32',
      },
      bitmap: {
        type: 'string',
      },
    },
  },
  Vsock: {
    type: 'object',
    required: ['guest_cid', 'uds_path'],
    properties: {
      guest_cid: {
        type: 'integer',
        minimum: 3,
      },
      uds_path: {
        type: 'string',
      },
      vsock_id: {
        type: 'string',
      },
    },
  },
};
