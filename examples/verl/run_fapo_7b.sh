#!/usr/bin/env bash
# FAPO on Qwen2.5-Math-7B with verl (Ray), the paper's recipe, with fapo's reward function.
# The hyperparameters are those of the FAPO authors' verl run script (verl-recipe fapo/run_fapo_7b.sh);
# the only difference is the reward function: custom_reward_function points at fapo.integrations.verl.
#
# Needs: pip install verl fapo (fapo's reward function runs inside verl's reward workers).
# GenRM: by default verl serves FAPO-GenRM-4B itself (reward_model.enable=True) behind its router and
# fapo asks it through /generate. To use GenRM servers you run yourself (vLLM / SGLang, any hosts), set
#   JUDGE_ENDPOINTS=http://genrm-0:8001/v1,http://genrm-1:8001/v1  (and RM_NODES=0)
# and fapo's client spreads the requests over them (least-loaded, retries, circuit breaker).
set -xeuo pipefail

RAY_ADDRESS=${RAY_ADDRESS:-"http://localhost:8265"}
WORKING_DIR=${WORKING_DIR:-"${PWD}"}
RUNTIME_ENV=${RUNTIME_ENV:-"${WORKING_DIR}/verl/trainer/runtime_env.yaml"}
NNODES=${NNODES:-2}
RM_NODES=${RM_NODES:-2}
RAY_DATA_HOME=${RAY_DATA_HOME:-"${HOME}/verl"}
MODEL_PATH=${MODEL_PATH:-"${RAY_DATA_HOME}/models/Qwen2.5-Math-7B"}   # set max_position_embeddings to 32768
GRM_PATH=${GRM_PATH:-"${RAY_DATA_HOME}/models/FAPO-GenRM-4B"}
CKPTS_DIR=${CKPTS_DIR:-"${RAY_DATA_HOME}/ckpts/FAPO-Reproduce/FAPO-7B-fapo"}
TRAIN_FILE=${TRAIN_FILE:-"${RAY_DATA_HOME}/data/fapo-train-boxed.parquet"}   # fapo data prepare writes both files
TEST_FILE=${TEST_FILE:-"${RAY_DATA_HOME}/data/fapo-test-full-boxed.parquet"}
JUDGE_ENDPOINTS=${JUDGE_ENDPOINTS:-""}

max_prompt_length=$((1024 * 2))
max_response_length=$((1024 * 8))
actor_max_tokens=$(((max_prompt_length + max_response_length) * 2))
infer_max_tokens=$(((max_prompt_length + max_response_length) * 3))

if [[ -n "${JUDGE_ENDPOINTS}" ]]; then
    genrm=(reward_model.enable=False "+custom_reward_function.reward_kwargs.judge_endpoints='${JUDGE_ENDPOINTS}'"
           +custom_reward_function.reward_kwargs.judge_model=FAPO-GenRM-4B)
else
    genrm=(reward_model.enable=True reward_model.enable_resource_pool=True reward_model.n_gpus_per_node=8
           reward_model.nnodes="${RM_NODES}" reward_model.model.path="${GRM_PATH}" reward_model.rollout.name=sglang
           reward_model.rollout.gpu_memory_utilization=0.95 reward_model.rollout.tensor_model_parallel_size=1
           reward_model.rollout.free_cache_engine=False)
fi

ray job submit --no-wait --runtime-env="${RUNTIME_ENV}" --address "${RAY_ADDRESS}" --working-dir "${WORKING_DIR}" \
    -- python3 -m verl.trainer.main_ppo \
    data.train_files="${TRAIN_FILE}" data.val_files="${TEST_FILE}" data.prompt_key=prompt \
    data.max_prompt_length=${max_prompt_length} data.max_response_length=${max_response_length} \
    data.train_batch_size=512 data.return_raw_chat=True data.filter_overlong_prompts=True data.truncation='error' \
    algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False algorithm.kl_ctrl.kl_coef=0.0 \
    actor_rollout_ref.model.path="${MODEL_PATH}" actor_rollout_ref.model.use_remove_padding=True \
    +actor_rollout_ref.model.override_config.max_position_embeddings=32768 \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.kl_loss_coef=0.0 \
    actor_rollout_ref.actor.clip_ratio_low=0.2 actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.clip_ratio_c=10.0 actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.optim.lr_warmup_steps=10 \
    actor_rollout_ref.actor.optim.weight_decay=0.1 actor_rollout_ref.actor.grad_clip=1.0 \
    actor_rollout_ref.actor.entropy_coeff=0 actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${actor_max_tokens} \
    actor_rollout_ref.actor.fsdp_config.param_offload=True actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
    actor_rollout_ref.actor.fsdp_config.fsdp_size=8 actor_rollout_ref.actor.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=${infer_max_tokens} \
    actor_rollout_ref.ref.fsdp_config.param_offload=True actor_rollout_ref.ref.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.mode=async actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=1.0 actor_rollout_ref.rollout.top_p=1.0 actor_rollout_ref.rollout.top_k=-1 \
    actor_rollout_ref.rollout.val_kwargs.temperature=1.0 actor_rollout_ref.rollout.val_kwargs.top_p=0.7 \
    actor_rollout_ref.rollout.val_kwargs.top_k=-1 actor_rollout_ref.rollout.val_kwargs.do_sample=True \
    actor_rollout_ref.rollout.val_kwargs.n=1 actor_rollout_ref.rollout.gpu_memory_utilization=0.80 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.enable_chunked_prefill=True \
    actor_rollout_ref.rollout.max_num_batched_tokens=$((max_prompt_length + max_response_length)) \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${infer_max_tokens} \
    "${genrm[@]}" \
    reward_model.reward_manager=dapo \
    +reward_model.reward_kwargs.overlong_buffer_cfg.enable=True \
    +reward_model.reward_kwargs.overlong_buffer_cfg.len=$((1024 * 4)) \
    +reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0 \
    +reward_model.reward_kwargs.overlong_buffer_cfg.log=True \
    +reward_model.reward_kwargs.max_resp_len=${max_response_length} \
    custom_reward_function.path=pkg://fapo.integrations.verl \
    custom_reward_function.name=compute_score_fapo \
    trainer.logger='["console","wandb"]' trainer.project_name=FAPO-Reproduce trainer.experiment_name=FAPO-7B-fapo \
    trainer.n_gpus_per_node=8 trainer.nnodes="${NNODES}" trainer.val_before_train=True trainer.test_freq=10 \
    trainer.save_freq=-1 trainer.total_epochs=10 trainer.total_training_steps=200 \
    trainer.default_local_dir="${CKPTS_DIR}" trainer.resume_mode=auto trainer.log_val_generations=10
